//! The built `fsm` binary, run as a user runs it, against a real SQLite file and a real
//! PostgreSQL database (the server of `DATABASE_URL`) holding executions in every status,
//! while a worker (in this test's process) holds the store.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{
    Context, DurableExecutor, ExecutionId, ExecutionStatus, Executor, Fsm, Operator, PgStore,
    SqliteStore, StepError, Store, TaskToken,
};
use serde::{Deserialize, Serialize};

#[path = "../../tests/support/postgres.rs"]
mod postgres;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Parcel {
    #[fsm(initial, on(pack => Packed | Refused))]
    Ordered { id: u32 },
    #[fsm(wait, on(deliver => Delivered), catch(lost => Lost))]
    Packed { id: u32 },
    #[fsm(terminal)]
    Delivered { id: u32, by: String },
    #[fsm(terminal)]
    Lost { id: u32 },
    #[fsm(terminal(failure))]
    Refused { id: u32 },
}

/// The steps; clones share what they hold, so that two workers are one warehouse.
#[derive(Clone)]
struct Warehouse {
    on_fire: Arc<AtomicBool>,
    tokens: Arc<Mutex<Vec<(u32, String)>>>,
    /// Never opened: the parcel that packs for ever (a running execution).
    stuck: Arc<tokio::sync::Semaphore>,
}

impl Default for Warehouse {
    fn default() -> Self {
        Warehouse {
            on_fire: Arc::new(AtomicBool::new(false)),
            tokens: Arc::default(),
            stuck: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl parcel::Steps for Warehouse {
    async fn ordered(
        &self,
        p: parcel::Machine<parcel::Ordered>,
        _: Context,
    ) -> Result<parcel::OrderedNext, StepError> {
        if p.id == 99 {
            let _ = self.stuck.acquire().await;
        }
        if p.id == 13 && self.on_fire.load(Ordering::SeqCst) {
            return Err(StepError::fatal("warehouse", "on fire"));
        }
        if p.id == 0 {
            return Ok(p.pack(|s| parcel::Refused { id: s.id }).into());
        }
        Ok(p.pack(|s| parcel::Packed { id: s.id }).into())
    }

    async fn packed(
        &self,
        p: parcel::Machine<parcel::Packed>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        self.tokens.lock().unwrap().push((p.id, token.to_string()));
        Ok(())
    }

    fn catch_packed_to_lost(&self, failed: parcel::Packed, _: &StepError) -> parcel::Lost {
        parcel::Lost { id: failed.id }
    }
}

fn fsm(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsm"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `fsm`, expecting success; returns what it printed.
fn ok(store: &str, args: &[&str]) -> String {
    let out = fsm(store, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "fsm {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `fsm`, expecting failure; returns what it said on stderr.
fn refused(store: &str, args: &[&str]) -> String {
    let out = fsm(store, args);
    assert!(!out.status.success(), "fsm {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

async fn until_status<S: Store>(store: &S, id: ExecutionId, status: ExecutionStatus) {
    for _ in 0..2_000 {
        if store.get(id).await.unwrap().unwrap().status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never became {status}");
}

/// The executions of every status, started on `ex`.
struct Seeded {
    waiting: ExecutionId,
    delivered: ExecutionId,
    refused: ExecutionId,
    errored: ExecutionId,
    cancelled: ExecutionId,
    running: ExecutionId,
    lost: ExecutionId,
}

async fn seed<S: Store + Clone>(ex: &DurableExecutor<Parcel, Warehouse, S>) -> Seeded {
    let start = |id| ex.start(parcel::Machine::new(parcel::Ordered { id }));
    ex.steps().on_fire.store(true, Ordering::SeqCst);
    let s = Seeded {
        waiting: start(1).await.unwrap(),
        delivered: start(2).await.unwrap(),
        refused: start(0).await.unwrap(),
        errored: start(13).await.unwrap(),
        cancelled: start(5).await.unwrap(),
        running: start(99).await.unwrap(),
        lost: start(7).await.unwrap(),
    };
    let store = ex.store();
    for id in [s.waiting, s.delivered, s.cancelled, s.lost] {
        until_status(store, id, ExecutionStatus::Waiting).await;
    }
    let token = |n: u32| {
        ex.steps()
            .tokens
            .lock()
            .unwrap()
            .iter()
            .find(|(id, _)| *id == n)
            .unwrap()
            .1
            .clone()
    };
    ex.complete::<parcel::Packed, _>(&token(2), |p| {
        p.deliver(|s| parcel::Delivered {
            id: s.id,
            by: "van".into(),
        })
    })
    .await
    .unwrap();
    Operator::new(store.clone(), "seed")
        .cancel(s.cancelled)
        .await
        .unwrap();
    until_status(store, s.delivered, ExecutionStatus::Succeeded).await;
    until_status(store, s.refused, ExecutionStatus::Failed).await;
    until_status(store, s.errored, ExecutionStatus::Errored).await;
    s
}

/// What a user does with the command line, against `url`, while `ex` works on the store.
async fn a_user_session<S: Store + Clone>(url: &str, ex: &DurableExecutor<Parcel, Warehouse, S>) {
    let s = seed(ex).await;
    let store = ex.store();
    let url = url.to_owned();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&url, &args)
        })
    };
    let fail = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            refused(&url, &args)
        })
    };
    let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    // list: every status, as a table and as JSON.
    let table = run(v(&["list"])).await.unwrap();
    for status in [
        "waiting",
        "succeeded",
        "failed",
        "errored",
        "cancelled",
        "running",
    ] {
        assert!(
            table.lines().any(|l| l.contains(&format!(" {status} "))),
            "{status}:\n{table}"
        );
    }
    assert!(table.contains("(7 executions)"), "{table}");
    let errored = run(v(&["list", "--status", "errored", "--json"]))
        .await
        .unwrap();
    let errored: serde_json::Value = serde_json::from_str(&errored).unwrap();
    let rows = errored["executions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], s.errored.to_string());
    assert_eq!(rows[0]["state"], "Ordered");
    let paged = run(v(&["list", "--limit", "3"])).await.unwrap();
    let cursor = paged
        .lines()
        .last()
        .unwrap()
        .strip_prefix("more: --after ")
        .unwrap()
        .to_owned();
    let rest = run(v(&["list", "--after", &cursor, "--limit", "0", "--json"]))
        .await
        .unwrap();
    let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["executions"].as_array().unwrap().len(), 4);

    // show: where it stands, its data, its history.
    let shown = run(v(&["show", &s.errored.to_string()])).await.unwrap();
    for line in [
        "status     errored",
        "state      Ordered",
        "error      warehouse: on fire",
        "data       {\"Ordered\":{\"id\":13}}",
        "execution failed",
    ] {
        assert!(shown.contains(line), "{line}:\n{shown}");
    }
    // diagram: the path, in mermaid and in DOT.
    let mermaid = run(v(&["diagram", &s.delivered.to_string()]))
        .await
        .unwrap();
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("linkStyle"), "{mermaid}");
    let dot = run(v(&["diagram", &s.lost.to_string(), "--dot"]))
        .await
        .unwrap();
    assert!(dot.starts_with("digraph"), "{dot}");
    // stats: counts, the oldest waits.
    let stats = run(v(&["stats"])).await.unwrap();
    for (status, n) in [("errored", "1"), ("cancelled", "1"), ("waiting", "2")] {
        assert!(
            stats
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [status, n]),
            "{status} {n}:\n{stats}"
        );
    }
    assert!(stats.contains(&s.waiting.to_string()), "{stats}");
    let stats = run(v(&["stats", "--json"])).await.unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["by_status"]["running"], 1);
    assert_eq!(stats["oldest_waits"].as_array().unwrap().len(), 2);
    let machines = run(v(&["machines"])).await.unwrap();
    assert!(machines.starts_with("Parcel  "), "{machines}");

    // Actions, beside the worker.
    ex.steps().on_fire.store(false, Ordering::SeqCst);
    let said = run(v(&["redrive", &s.errored.to_string(), "--as", "alice"]))
        .await
        .unwrap();
    assert_eq!(said, format!("redrove {}\n", s.errored));
    until_status(store, s.errored, ExecutionStatus::Waiting).await;
    let again = fail(v(&["redrive", &s.refused.to_string()])).await.unwrap();
    assert!(again.contains("as its machine decided"), "{again}");
    let wrong = fail(v(&[
        "complete",
        &s.waiting.to_string(),
        "--next",
        r#"{"Refused":{"id":1}}"#,
    ]))
    .await
    .unwrap();
    assert!(
        wrong.contains("`Packed` leads to `Delivered`, not to `Refused`"),
        "{wrong}"
    );
    run(v(&[
        "complete",
        &s.waiting.to_string(),
        "--next",
        r#"{"Delivered":{"id":1,"by":"hand"}}"#,
        "--as",
        "alice",
    ]))
    .await
    .unwrap();
    until_status(store, s.waiting, ExecutionStatus::Succeeded).await;
    let history = run(v(&["show", &s.waiting.to_string()])).await.unwrap();
    assert!(history.contains("answered by hand by alice"), "{history}");
    let lost_token = ex
        .steps()
        .tokens
        .lock()
        .unwrap()
        .iter()
        .find(|(id, _)| *id == 7)
        .unwrap()
        .1
        .clone();
    run(v(&["fail", "--token", &lost_token, "--kind", "lost"]))
        .await
        .unwrap();
    until_status(store, s.lost, ExecutionStatus::Succeeded).await;
    let used = fail(v(&["fail", "--token", &lost_token, "--kind", "lost"]))
        .await
        .unwrap();
    assert!(used.contains("already used"), "{used}");
    let forged = fail(v(&[
        "complete", "--token", "ft1.nope", "--next", "\"Lost\"",
    ]))
    .await
    .unwrap();
    assert!(forged.contains("not a task token"), "{forged}");

    // Fail a wait by hand, by id; then in bulk, the waits a filter selects, up to a limit.
    let eight = ex
        .start(parcel::Machine::new(parcel::Ordered { id: 8 }))
        .await
        .unwrap();
    until_status(store, eight, ExecutionStatus::Waiting).await;
    let failed = run(v(&[
        "fail",
        &eight.to_string(),
        "--kind",
        "lost",
        "--as",
        "alice",
    ]))
    .await
    .unwrap();
    assert_eq!(failed, format!("failed {eight}\n"));
    until_status(store, eight, ExecutionStatus::Succeeded).await;
    let lost = run(v(&["show", &eight.to_string()])).await.unwrap();
    assert!(lost.contains("state      Lost"), "{lost}");
    assert!(lost.contains("answered by hand by alice"), "{lost}");
    let nine = ex
        .start(parcel::Machine::new(parcel::Ordered { id: 9 }))
        .await
        .unwrap();
    until_status(store, nine, ExecutionStatus::Waiting).await;
    let dry = run(v(&["fail", "--status", "waiting", "--kind", "lost"]))
        .await
        .unwrap();
    assert!(dry.contains("2 executions match; 2 to act on"), "{dry}");
    let done = run(v(&[
        "fail", "--status", "waiting", "--kind", "lost", "--limit", "1", "--yes",
    ]))
    .await
    .unwrap();
    assert!(done.contains("1 failed, 0 refused"), "{done}");
    // The first in the list's order (by start): the redriven one, started before nine.
    until_status(store, s.errored, ExecutionStatus::Succeeded).await;
    assert_eq!(
        store.get(nine).await.unwrap().unwrap().status,
        ExecutionStatus::Waiting
    );

    // Bulk: counted first, applied only with --yes.
    let dry = run(v(&["cancel", "--status", "waiting"])).await.unwrap();
    assert!(dry.contains("1 execution matches; 1 to act on"), "{dry}");
    assert!(dry.contains("nothing changed"), "{dry}");
    assert_eq!(
        store.get(nine).await.unwrap().unwrap().status,
        ExecutionStatus::Waiting
    );
    let done = run(v(&["cancel", "--status", "waiting", "--yes"]))
        .await
        .unwrap();
    assert!(done.contains("1 cancelled, 0 refused"), "{done}");
    assert_eq!(
        store.get(nine).await.unwrap().unwrap().status,
        ExecutionStatus::Cancelled
    );
    let running = fail(v(&["redrive", &s.running.to_string()])).await.unwrap();
    assert!(
        running.contains("is running: it cannot be redriven"),
        "{running}"
    );
    let nothing = fail(v(&["redrive"])).await.unwrap();
    assert!(nothing.contains("name the executions"), "{nothing}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_command_line_on_a_sqlite_file_held_by_a_worker() {
    let dir = std::env::temp_dir().join(format!("fsm-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("parcels.db");
    runtime().block_on(async {
        let ex = Executor::<Parcel, Warehouse>::builder(Warehouse::default())
            .durable(SqliteStore::open(&path).unwrap())
            .unwrap();
        a_user_session(&format!("sqlite:{}", path.display()), &ex).await;
        // A store that is not one, and none at all, say so.
        let not_a_db = dir.join("notes.txt");
        std::fs::write(&not_a_db, "hello").unwrap();
        let err = tokio::task::spawn_blocking(move || {
            refused(&format!("sqlite:{}", not_a_db.display()), &["list"])
        })
        .await
        .unwrap();
        assert!(err.contains("is not a database"), "{err}");
        let err = tokio::task::spawn_blocking(|| refused("sqlite:/nonexistent/x.db", &["list"]))
            .await
            .unwrap();
        assert!(err.contains("no such file"), "{err}");
        ex.steps().stuck.add_permits(1);
        ex.shutdown().await;
    });
}

#[test]
fn the_command_line_on_postgresql_beside_a_worker() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        let line = "SKIPPED the_command_line_on_postgresql_beside_a_worker: DATABASE_URL is not \
                    set (.ci/run starts a server)";
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        println!("{line}");
        return;
    };
    runtime().block_on(async {
        let url = postgres::fresh_database(&url, "cli").await;
        // Before any worker: the read-only commands find no tables, and create none.
        let empty = url.clone();
        let err = tokio::task::spawn_blocking(move || refused(&empty, &["list"]))
            .await
            .unwrap();
        assert!(err.contains("no fsm tables"), "{err}");
        let ex = Executor::<Parcel, Warehouse>::builder(Warehouse::default())
            .durable(PgStore::connect(&url).await.unwrap())
            .unwrap();
        a_user_session(&url, &ex).await;
        ex.steps().stuck.add_permits(1);
        ex.shutdown().await;
    });
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the browser test's tools are: Chromium, Node.js, and puppeteer-core in
/// `FSM_NODE_MODULES` (`.ci/run` installs them).
fn browser_tools() -> Option<(String, std::path::PathBuf)> {
    let chromium = std::env::var("FSM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let modules = std::path::PathBuf::from(std::env::var_os("FSM_NODE_MODULES")?);
    let node = Command::new("node").arg("--version").output().ok()?;
    (node.status.success()
        && std::path::Path::new(&chromium).exists()
        && modules.join("puppeteer-core").exists())
    .then_some((chromium, modules))
}

#[test]
fn the_console_in_a_real_browser() {
    let Some(tools) = browser_tools() else {
        let line = "SKIPPED the_console_in_a_real_browser: Chromium, node or puppeteer-core (in \
                    FSM_NODE_MODULES) not found; .ci/run installs them";
        assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
        println!("{line}");
        return;
    };
    let dir = std::env::temp_dir().join(format!("fsm-console-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("parcels.db");
    runtime().block_on(async {
        let ex = Executor::<Parcel, Warehouse>::builder(Warehouse::default())
            .durable(SqliteStore::open(&path).unwrap())
            .unwrap();
        in_the_browser(&tools, &format!("sqlite:{}", path.display()), &[ex], "").await;
    });
}

#[test]
fn the_console_in_a_real_browser_on_postgresql_with_two_workers() {
    let Some(tools) = browser_tools() else {
        let line = "SKIPPED the_console_in_a_real_browser_on_postgresql_with_two_workers: \
                    Chromium, node or puppeteer-core (in FSM_NODE_MODULES) not found; .ci/run \
                    installs them";
        assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
        println!("{line}");
        return;
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        let line = "SKIPPED the_console_in_a_real_browser_on_postgresql_with_two_workers: \
                    DATABASE_URL is not set (.ci/run starts a server)";
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        println!("{line}");
        return;
    };
    runtime().block_on(async {
        let url = postgres::fresh_database(&url, "console_browser").await;
        let warehouse = Warehouse::default();
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(
                Executor::<Parcel, Warehouse>::builder(warehouse.clone())
                    .durable(PgStore::connect(&url).await.unwrap())
                    .unwrap(),
            );
        }
        in_the_browser(&tools, &url, &workers, "postgres").await;
    });
}

/// A person at the console (`fsm console --actions` on `store`, driven in Chromium by
/// `console_e2e.cjs`) while `workers` work on the store: filter, look, log in, redrive,
/// answer a wait, cancel; then the store is checked. Screenshots go to
/// `target/console-shots/<shots>`.
async fn in_the_browser<S: Store + Clone>(
    (chromium, modules): &(String, std::path::PathBuf),
    store: &str,
    workers: &[DurableExecutor<Parcel, Warehouse, S>],
    shots: &str,
) {
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/console-shots")
        .join(shots);
    std::fs::create_dir_all(&shots).unwrap();
    let token = "a token for the browser test";
    let ex = &workers[0];
    let s = seed(ex).await;
    ex.steps().on_fire.store(false, Ordering::SeqCst);
    let url = format!("127.0.0.1:{}", free_port());
    let mut console = Command::new(env!("CARGO_BIN_EXE_fsm"))
        .arg("--store")
        .arg(store)
        .args(["console", "--actions", "--listen", &url])
        .env("FSM_CONSOLE_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(console.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("console on http://"), "{line}");
    let ids = serde_json::json!({
        "errored": s.errored.to_string(),
        "waiting": s.waiting.to_string(),
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_e2e.cjs");
    let browser = tokio::process::Command::new("node")
        .arg(script)
        .env("NODE_PATH", modules)
        .env("FSM_CONSOLE_URL", format!("http://{url}"))
        .env("FSM_CONSOLE_TOKEN", token)
        .env("FSM_CHROMIUM", chromium)
        .env("FSM_SHOTS", &shots)
        .env("FSM_IDS", ids.to_string())
        .output()
        .await
        .unwrap();
    let _ = console.kill();
    let _ = console.wait();
    let said = String::from_utf8_lossy(&browser.stdout);
    assert!(
        browser.status.success() && said.contains("browser: ok"),
        "{said}\n{}",
        String::from_utf8_lossy(&browser.stderr)
    );
    // What the person did is in the store, recorded as theirs.
    let store = ex.store();
    let redriven = store.get(s.errored).await.unwrap().unwrap();
    assert_eq!(
        (redriven.status, redriven.state_name.as_str()),
        (ExecutionStatus::Succeeded, "Delivered")
    );
    assert!(
        redriven.state.contains("\"by\":\"browser\""),
        "{}",
        redriven.state
    );
    let history = ex.history(s.errored).await.unwrap().to_string();
    assert!(
        history.contains("execution redriven   Ordered"),
        "{history}"
    );
    assert!(history.contains("by console:tester"), "{history}");
    assert_eq!(
        store.get(s.waiting).await.unwrap().unwrap().status,
        ExecutionStatus::Cancelled
    );
    for shot in [
        "executions",
        "execution",
        "confirm",
        "execution-after",
        "waiting",
        "machines",
    ] {
        let png = shots.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&png)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "{}",
            png.display()
        );
    }
    ex.steps().stuck.add_permits(1);
    for worker in workers {
        worker.shutdown().await;
    }
}
