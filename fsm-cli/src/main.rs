//! `fsm`: look at and act on the durable executions in a store, without the machines' code.
//!
//! The store is named by a URL (`sqlite:orders.db`, `postgres://app@db/orders`), in `--store`
//! or `FSM_STORE`. Every command reads only, unless it is an action (`redrive`, `cancel`,
//! `complete`, `fail`): a SQLite file is then opened read-only (no lock: a worker holding it
//! goes on), a PostgreSQL session is read-only. Machines' definitions come from the store,
//! where workers register them when they start.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fsm_core::store::{ListQuery, Millis, Stats};
use fsm_core::views::Diagram;
use fsm_core::{
    Action, Cursor, ExecutionId, ExecutionRecord, ExecutionStatus, ExecutionSummary, Operator,
    PgOptions, PgStore, SqliteOptions, SqliteStore, StepError, Store,
};
use serde_json::{json, Value};

mod time;

#[derive(Parser)]
#[command(
    name = "fsm",
    version,
    about = "List, inspect, redrive, cancel and answer durable executions",
    long_about = "List, inspect, redrive, cancel and answer the durable executions in a store. \
                  Reads only, unless an action (redrive, cancel, complete, fail) is asked for."
)]
struct Cli {
    /// The store: `sqlite:PATH` (or a path to a .db file) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "FSM_STORE", global = true)]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Executions, as a table (or JSON), filtered and paged.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Newest first.
        #[arg(long)]
        newest_first: bool,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The page after this cursor (printed at the end of the previous page).
        #[arg(long)]
        after: Option<Cursor>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One execution: where it stands, its data, its history.
    Show {
        /// The execution's id.
        execution: ExecutionId,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The machine's diagram with the path the execution took drawn on it.
    Diagram {
        /// The execution's id.
        execution: ExecutionId,
        /// Graphviz DOT instead of mermaid.
        #[arg(long, conflicts_with = "mermaid")]
        dot: bool,
        /// Mermaid (the default).
        #[arg(long)]
        mermaid: bool,
    },
    /// Counts by status and state, the oldest waits and the backlog.
    Stats {
        /// Only this machine's executions.
        #[arg(long)]
        machine: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The machines whose workers registered their definitions.
    Machines,
    /// Serve the web console (read-only): executions, their paths and histories, live.
    Console {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Allow an address beyond loopback.
        #[arg(long)]
        beyond_loopback: bool,
        /// Enable actions (redrive, cancel, answer a wait) for whoever logs in with the token
        /// in `FSM_CONSOLE_TOKEN`.
        #[arg(long)]
        actions: bool,
        /// Run a monitor for the Alerts page: waits older than an hour, steps running or
        /// retried for ten minutes, a backlog a minute old, leases a minute out, and more
        /// than 5% failing in a state over five minutes (at least 20 ended).
        #[arg(long)]
        monitor: bool,
    },
    /// Run again an execution that errored or was cancelled, from where it stopped.
    Redrive(Bulk),
    /// Stop running or waiting executions.
    Cancel(Bulk),
    /// Complete a wait, by its token or by hand, with the next state as JSON.
    Complete {
        #[command(flatten)]
        target: WaitTarget,
        /// The next state as the machine's enum serializes it: '{"Shipped":{"tracking":"1Z"}}'.
        #[arg(long)]
        next: String,
        /// Who answers, as the history records it.
        #[arg(long = "as", default_value = "fsm-cli")]
        who: String,
    },
    /// Fail waits, by token, or by hand (named, or those a filter selects), with an error.
    Fail {
        #[command(flatten)]
        bulk: Bulk,
        /// The task token the wait handed out (instead of executions or a filter).
        #[arg(long, conflicts_with = "executions")]
        token: Option<String>,
        /// The error's kind (catch routes match it).
        #[arg(long)]
        kind: String,
        /// The error's message.
        #[arg(long, default_value = "failed by an operator")]
        message: String,
        /// Whether the waiting state's retries apply.
        #[arg(long)]
        retryable: bool,
    },
}

/// Which executions.
#[derive(Args, Clone, Default)]
struct Filter {
    /// Only this machine's.
    #[arg(long)]
    machine: Option<String>,
    /// Only those with this status (running, waiting, succeeded, failed, errored, cancelled).
    #[arg(long, value_parser = parse_status)]
    status: Option<ExecutionStatus>,
    /// Only those in this state.
    #[arg(long)]
    state: Option<String>,
    /// Only those whose name begins with this.
    #[arg(long)]
    name_prefix: Option<String>,
    /// Only those started at or after this time (2026-12-01, 2026-12-01T10:30:00Z, or 30m,
    /// 2h, 7d ago).
    #[arg(long, value_parser = time::parse)]
    started_after: Option<Millis>,
    /// Only those started before this time.
    #[arg(long, value_parser = time::parse)]
    started_before: Option<Millis>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.machine.is_none()
            && self.status.is_none()
            && self.state.is_none()
            && self.name_prefix.is_none()
            && self.started_after.is_none()
            && self.started_before.is_none()
    }

    fn query(&self) -> ListQuery {
        let mut q = ListQuery::new();
        q.machine.clone_from(&self.machine);
        q.status = self.status;
        q.state.clone_from(&self.state);
        q.name_prefix.clone_from(&self.name_prefix);
        q.started_after = self.started_after;
        q.started_before = self.started_before;
        q
    }
}

/// An action on executions named by id, or on those a filter selects.
#[derive(Args)]
struct Bulk {
    /// The executions; or none, and a filter.
    executions: Vec<ExecutionId>,
    #[command(flatten)]
    filter: Filter,
    /// With a filter: at most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// With a filter: apply it (without, the command says what it would do and changes
    /// nothing).
    #[arg(long)]
    yes: bool,
    /// Who acts, as the histories record it.
    #[arg(long = "as", default_value = "fsm-cli")]
    who: String,
}

/// The wait to answer.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct WaitTarget {
    /// The waiting execution (answered by hand, without its token).
    execution: Option<ExecutionId>,
    /// The task token the wait handed out.
    #[arg(long)]
    token: Option<String>,
}

fn parse_status(s: &str) -> Result<ExecutionStatus, String> {
    ExecutionStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("not a status: one of {}", all.join(", "))
    })
}

/// Why a command failed: what the user reads after `fsm: `.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type Out = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fsm: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("fsm: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Where the store is.
enum Url {
    Sqlite(String),
    Postgres(String),
}

fn url(store: Option<String>) -> Result<Url, Failure> {
    let Some(store) = store else {
        return Err(Failure(
            "no store: give --store sqlite:PATH or --store postgres://... (or set FSM_STORE)"
                .into(),
        ));
    };
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return Ok(Url::Postgres(store));
    }
    let path = store
        .strip_prefix("sqlite://")
        .or_else(|| store.strip_prefix("sqlite:"))
        .unwrap_or(&store);
    if path.is_empty() || path.contains("://") {
        return Err(Failure(format!(
            "{store}: not a store URL (sqlite:PATH or postgres://...)"
        )));
    }
    Ok(Url::Sqlite(path.to_owned()))
}

async fn run(cli: Cli) -> Out {
    let writes = matches!(
        cli.command,
        Command::Redrive(_)
            | Command::Cancel(_)
            | Command::Complete { .. }
            | Command::Fail { .. }
            | Command::Console { actions: true, .. }
    );
    let who = match &cli.command {
        Command::Redrive(b) | Command::Cancel(b) | Command::Fail { bulk: b, .. } => b.who.clone(),
        Command::Complete { who, .. } => who.clone(),
        _ => "fsm-cli".into(),
    };
    match url(cli.store)? {
        Url::Sqlite(path) => {
            if !std::path::Path::new(&path).exists() {
                return Err(Failure(format!("{path}: no such file")));
            }
            let store = if writes {
                SqliteStore::open_client(&path)?
            } else {
                let options = SqliteOptions {
                    read_only: true,
                    ..SqliteOptions::default()
                };
                SqliteStore::open_with(&path, options)?
            };
            command(Operator::new(store, who), cli.command).await
        }
        Url::Postgres(url) => {
            let store = PgStore::connect_with(&url, PgOptions::new().read_only(!writes)).await?;
            command(Operator::new(store, who), cli.command).await
        }
    }
}

async fn command<S: Store + Clone>(ops: Operator<S>, command: Command) -> Out {
    match command {
        Command::List {
            filter,
            newest_first,
            limit,
            after,
            json,
        } => {
            let mut query = filter.query().limit(limit);
            query.newest_first = newest_first;
            query.after = after;
            list(&ops, query, json).await
        }
        Command::Show { execution, json } => show(&ops, execution, json).await,
        Command::Diagram { execution, dot, .. } => {
            let row = get(&ops, execution).await?;
            let def = ops.definition_of(&row).await?;
            let history = ops.history(&row).await?;
            let diagram = Diagram::new(def).with_path(&history);
            print!(
                "{}",
                if dot {
                    diagram.dot()
                } else {
                    diagram.mermaid()
                }
            );
            Ok(())
        }
        Command::Stats { machine, json } => stats(&ops, machine.as_deref(), json).await,
        Command::Console {
            listen,
            beyond_loopback,
            actions,
            monitor,
        } => {
            console(
                ops.store().clone(),
                listen,
                (beyond_loopback, actions, monitor),
            )
            .await
        }
        Command::Machines => {
            for d in ops.store().definitions(None).await? {
                let states = fsm_core::Definition::from_json(&d.json)
                    .map(|def| def.states.len().to_string())
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                println!(
                    "{}  {}  {} states  registered {}",
                    d.machine,
                    d.fingerprint,
                    states,
                    time::show(d.registered_at)
                );
            }
            Ok(())
        }
        Command::Redrive(bulk) => act(&ops, Action::Redrive, bulk).await,
        Command::Cancel(bulk) => act(&ops, Action::Cancel, bulk).await,
        Command::Complete { target, next, .. } => {
            let next: Value = serde_json::from_str(&next)
                .map_err(|e| Failure(format!("--next is not JSON: {e}")))?;
            let id = match (target.execution, target.token) {
                (_, Some(token)) => ops.complete_with_token(token.as_str(), &next).await?,
                (Some(id), None) => {
                    ops.complete(id, &next).await?;
                    id
                }
                (None, None) => return Err(Failure("name the execution or its --token".into())),
            };
            println!("completed the wait of {id}");
            Ok(())
        }
        Command::Fail {
            bulk,
            token,
            kind,
            message,
            retryable,
        } => {
            let error = if retryable {
                StepError::retryable(kind, message)
            } else {
                StepError::fatal(kind, message)
            };
            match token {
                Some(token) if bulk.filter.is_empty() => {
                    let id = ops.fail_with_token(token.as_str(), error).await?;
                    println!("failed the wait of {id}");
                    Ok(())
                }
                Some(_) => Err(Failure("give a --token or a filter, not both".into())),
                None => act(&ops, Action::Fail(error), bulk).await,
            }
        }
    }
}

/// Serves the console until SIGINT or SIGTERM.
async fn console<S: Store + Clone>(
    store: S,
    listen: std::net::SocketAddr,
    (beyond_loopback, actions, monitor): (bool, bool, bool),
) -> Out {
    let mut options = fsm_console::ConsoleOptions::default();
    if monitor {
        use fsm_core::Rule;
        use std::time::Duration;
        let minute = Duration::from_secs(60);
        let rules = vec![
            Rule::WaitLongerThan(60 * minute),
            Rule::StepLongerThan(10 * minute),
            Rule::BacklogOlderThan(minute),
            Rule::LeaseExpiredFor(minute),
            Rule::FailureRate {
                above: 0.05,
                window: 5 * minute,
                at_least: 20,
            },
        ];
        options = options.monitor(rules, Duration::from_secs(10));
    }
    if actions {
        let token = std::env::var("FSM_CONSOLE_TOKEN").unwrap_or_default();
        if token.len() < 16 {
            return Err(Failure(
                "--actions needs a token of at least 16 characters in FSM_CONSOLE_TOKEN".into(),
            ));
        }
        options = options.actions(token);
        println!("console on http://{listen}/ (actions for whoever logs in with the token)");
    } else {
        println!("console on http://{listen}/ (read-only)");
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    fsm_console::serve(store, listen, beyond_loopback, options, shutdown).await?;
    Ok(())
}

async fn get<S: Store>(ops: &Operator<S>, id: ExecutionId) -> Result<ExecutionRecord, Failure> {
    ops.store()
        .get(id)
        .await?
        .ok_or_else(|| Failure(format!("no execution {id}")))
}

fn summary_json(e: &ExecutionSummary) -> Value {
    json!({
        "id": e.id.to_string(),
        "name": e.name,
        "machine": e.machine,
        "state": e.state_name,
        "status": e.status.as_str(),
        "waiting_for": e.waiting_for.map(|w| w.as_str()),
        "step": e.step,
        "attempt": e.attempt,
        "due_at": e.due_at,
        "error": e.error,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    })
}

/// Text for a table cell: one line, at most `width` characters.
fn cell(text: &str, width: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

async fn list<S: Store>(ops: &Operator<S>, query: ListQuery, json: bool) -> Out {
    let page = ops.store().list(query).await?;
    if json {
        let executions: Vec<Value> = page.executions.iter().map(summary_json).collect();
        let out = json!({
            "executions": executions,
            "next": page.next.map(|c| c.to_string()),
        });
        println!("{out:#}");
        return Ok(());
    }
    println!(
        "{:<36}  {:<16}  {:<12}  {:<14}  {:<9}  {:<19}  {:<19}  {:>7}",
        "ID", "NAME", "MACHINE", "STATE", "STATUS", "STARTED", "UPDATED", "ATTEMPT"
    );
    for e in &page.executions {
        println!(
            "{:<36}  {:<16}  {:<12}  {:<14}  {:<9}  {:<19}  {:<19}  {:>7}",
            e.id.to_string(),
            cell(e.name.as_deref().unwrap_or("-"), 16),
            cell(&e.machine, 12),
            cell(&e.state_name, 14),
            e.status.as_str(),
            time::show(e.created_at),
            time::show(e.updated_at),
            e.attempt,
        );
    }
    match page.next {
        Some(next) => println!("more: --after {next}"),
        None => println!("({} executions)", page.executions.len()),
    }
    Ok(())
}

async fn show<S: Store>(ops: &Operator<S>, id: ExecutionId, json: bool) -> Out {
    let row = get(ops, id).await?;
    // Without a registered definition (or with one that does not read the events), the rows
    // as stored.
    let history = ops.history(&row).await;
    if json {
        let events: Vec<Value> = ops
            .store()
            .events(id)
            .await?
            .iter()
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "at_micros": e.at_micros,
                    "kind": e.kind,
                    "state": e.state,
                    "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
                })
            })
            .collect();
        let out = json!({
            "id": row.id.to_string(),
            "name": row.name,
            "machine": row.machine,
            "fingerprint": row.fingerprint,
            "state": row.state_name,
            "data": serde_json::from_str::<Value>(&row.state).unwrap_or(Value::String(row.state.clone())),
            "status": row.status.as_str(),
            "waiting_for": row.waiting_for.map(|w| w.as_str()),
            "step": row.step,
            "attempt": row.attempt,
            "due_at": row.due_at,
            "error": row.error,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "lease_owner": row.lease_owner,
            "events": events,
        });
        println!("{out:#}");
        return Ok(());
    }
    println!("execution  {}", row.id);
    if let Some(name) = &row.name {
        println!("name       {}", cell(name, 256));
    }
    println!(
        "machine    {} (definition {})",
        row.machine, row.fingerprint
    );
    let waiting = match row.waiting_for {
        Some(w) => format!(" (for {})", w.as_str()),
        None => String::new(),
    };
    println!("status     {}{waiting}", row.status);
    println!("state      {}", row.state_name);
    println!("step       {}, attempt {}", row.step, row.attempt);
    println!("started    {}", time::show(row.created_at));
    println!("updated    {}", time::show(row.updated_at));
    if let Some(due) = row.due_at {
        println!("due        {}", time::show(due));
    }
    if let Some(error) = &row.error {
        println!("error      {}", cell(error, 1000));
    }
    if let Some(owner) = &row.lease_owner {
        println!("held by    worker {owner}");
    }
    println!("data       {}", cell(&row.state, 4000));
    println!();
    match history {
        Ok(history) => print!("{history}"),
        Err(e) => {
            println!("history (as stored: {e})");
            for ev in ops.store().events(id).await? {
                println!(
                    "{:>6}  {:>12}us  {:<20}  {:<14}  {}",
                    ev.seq,
                    ev.at_micros,
                    cell(&ev.kind, 20),
                    cell(&ev.state, 14),
                    cell(&ev.detail, 200)
                );
            }
        }
    }
    Ok(())
}

async fn stats<S: Store>(ops: &Operator<S>, machine: Option<&str>, json: bool) -> Out {
    let now = time::now();
    let stats: Stats = ops.store().stats(machine, now, 5).await?;
    if json {
        let counts: Vec<Value> = stats
            .counts
            .iter()
            .map(|c| {
                json!({ "machine": c.machine, "state": c.state,
                        "status": c.status.as_str(), "count": c.count })
            })
            .collect();
        let by_status: serde_json::Map<String, Value> = ExecutionStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), json!(stats.with_status(*s))))
            .collect();
        let out = json!({
            "by_status": by_status,
            "counts": counts,
            "backlog": stats.backlog,
            "backlog_since": stats.backlog_since,
            "expired_leases": stats.expired_leases,
            "oldest_waits": stats.oldest_waits.iter().map(summary_json).collect::<Vec<_>>(),
        });
        println!("{out:#}");
        return Ok(());
    }
    println!("by status");
    for s in ExecutionStatus::ALL {
        println!("  {:<10} {:>9}", s.as_str(), stats.with_status(s));
    }
    println!();
    println!(
        "{:<16}  {:<20}  {:<9}  {:>9}",
        "MACHINE", "STATE", "STATUS", "COUNT"
    );
    for c in &stats.counts {
        println!(
            "{:<16}  {:<20}  {:<9}  {:>9}",
            cell(&c.machine, 16),
            cell(&c.state, 20),
            c.status.as_str(),
            c.count
        );
    }
    println!();
    match stats.backlog_since {
        Some(since) => println!(
            "backlog    {} due and not taken up, the oldest for {}",
            stats.backlog,
            time::age(now.saturating_sub(since))
        ),
        None => println!("backlog    none"),
    }
    if stats.expired_leases > 0 {
        println!(
            "leases     {} held by a worker whose lease ran out",
            stats.expired_leases
        );
    }
    if stats.oldest_waits.is_empty() {
        println!("waits      none");
    } else {
        println!("oldest waits");
        for w in &stats.oldest_waits {
            println!(
                "  {}  {:<12}  {:<14}  waiting for {}",
                w.id,
                cell(&w.machine, 12),
                cell(&w.state_name, 14),
                time::age(now.saturating_sub(w.updated_at))
            );
        }
    }
    Ok(())
}

async fn act<S: Store>(ops: &Operator<S>, action: Action, bulk: Bulk) -> Out {
    let verb = match action {
        Action::Redrive => "redrove",
        Action::Cancel => "cancelled",
        _ => "failed",
    };
    if !bulk.executions.is_empty() {
        if !bulk.filter.is_empty() {
            return Err(Failure("name executions or give a filter, not both".into()));
        }
        let mut failed = 0;
        for id in bulk.executions {
            match ops.apply(&action, id).await {
                Ok(()) => println!("{verb} {id}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("fsm: {e}");
                }
            }
        }
        return if failed == 0 {
            Ok(())
        } else {
            Err(Failure(format!("{failed} not {verb}")))
        };
    }
    if bulk.filter.is_empty() {
        return Err(Failure(
            "name the executions, or select them with a filter (--machine, --status, \
             --state, --name-prefix, --started-after, --started-before)"
                .into(),
        ));
    }
    let query = bulk.filter.query();
    let count = usize::try_from(ops.count(query.clone()).await?).unwrap_or(usize::MAX);
    let applies = if bulk.limit == 0 {
        count
    } else {
        count.min(bulk.limit)
    };
    let matches = if count == 1 {
        "1 execution matches".to_owned()
    } else {
        format!("{count} executions match")
    };
    println!("{matches}; {applies} to act on (--limit {})", bulk.limit);
    if !bulk.yes {
        let shown = ops.store().list(query.limit(applies.min(10))).await?;
        for e in &shown.executions {
            println!("  {}  {}  {}  {}", e.id, e.machine, e.state_name, e.status);
        }
        if applies > shown.executions.len() {
            println!("  ...");
        }
        println!("nothing changed: run again with --yes to apply");
        return Ok(());
    }
    let outcome = ops.bulk(action, query, bulk.limit).await?;
    for id in &outcome.done {
        println!("{verb} {id}");
    }
    for (id, e) in &outcome.refused {
        eprintln!("fsm: {id}: {e}");
    }
    println!(
        "{} {verb}, {} refused",
        outcome.done.len(),
        outcome.refused.len()
    );
    if outcome.refused.is_empty() {
        Ok(())
    } else {
        Err(Failure(format!("{} not {verb}", outcome.refused.len())))
    }
}
