//! The conformance suite of the durable stores: each test runs on a real SQLite file and on a
//! real PostgreSQL database (a fresh one per test, on the server `DATABASE_URL` names; without
//! it the PostgreSQL runs say they were skipped). Checkpoints, reading back, recovery after
//! the runtime that ran them is gone, durable retry timers, task tokens, bad data and changed
//! definitions; then what only SQLite has (files, a size limit, read-only opening).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::store::TokenStatus;
use fsm_core::{
    Context, DurableClient, DurableError, DurableExecutor, EventKind, ExecutionId, ExecutionStatus,
    Executor, Fsm, ListQuery, PgStore, SqliteOptions, SqliteStore, StepError, Store, StoreError,
    TaskToken, TokenError,
};
use serde::{Deserialize, Serialize};

/// A fresh directory for one test's database.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fsm-durable-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Order {
    #[fsm(initial, on(reserve => Reserved))]
    Placed { id: u32 },
    #[fsm(
        on(charge => Paid | Declined),
        retry(max_attempts = 3, interval_ms = 600_000, backoff_rate = 1.0)
    )]
    Reserved { id: u32 },
    #[fsm(
        wait(timeout_ms = 3_600_000),
        on(deliver => Delivered),
        retry(max_attempts = 1, interval_ms = 10),
        catch(timeout => Lost)
    )]
    Paid { id: u32, charge: String },
    #[fsm(terminal)]
    Delivered { id: u32 },
    #[fsm(terminal(failure))]
    Declined { id: u32 },
    #[fsm(terminal(failure))]
    Lost { id: u32 },
}

/// What the steps do, scripted by the test.
#[derive(Default)]
struct Shop {
    /// Charges the payment service made, by idempotency key.
    charges: Mutex<Vec<String>>,
    /// How many charge attempts fail before one succeeds.
    charge_failures: AtomicU32,
    /// Blocks the charge step until the test says (a step under way when the process dies).
    charge_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Blocks the first step (reserve) until the test says.
    place_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// How many times the first step ran.
    placed: AtomicU32,
    /// Tokens handed to the carrier.
    tokens: Mutex<Vec<String>>,
    /// When each charge attempt started, on tokio's clock.
    charge_times: Mutex<Vec<tokio::time::Instant>>,
    /// Told when a charge attempt starts.
    charge_started: tokio::sync::Notify,
    /// How many times the carrier's step fails after it handed out its token.
    hand_over_failures: AtomicU32,
    /// Blocks the carrier's step after it handed out its token (a step under way when the
    /// process dies).
    hand_over_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl order::Steps for Shop {
    async fn placed(
        &self,
        o: order::Machine<order::Placed>,
        _: Context,
    ) -> Result<order::Machine<order::Reserved>, StepError> {
        self.placed.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.place_gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(o.reserve(|s| order::Reserved { id: s.id }))
    }

    async fn reserved(
        &self,
        o: order::Machine<order::Reserved>,
        cx: Context,
    ) -> Result<order::ReservedNext, StepError> {
        self.charge_times
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        self.charge_started.notify_one();
        if let Some(gate) = &self.charge_gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .charge_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StepError::retryable("gateway", "busy"));
        }
        if o.id == 0 {
            return Ok(o.charge(|s| order::Declined { id: s.id }).into());
        }
        let key = cx.idempotency_key().to_string();
        self.charges.lock().unwrap().push(key.clone());
        Ok(o.charge(|s| order::Paid {
            id: s.id,
            charge: key,
        })
        .into())
    }

    async fn paid(
        &self,
        _: order::Machine<order::Paid>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        self.tokens.lock().unwrap().push(token.to_string());
        if let Some(gate) = &self.hand_over_gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .hand_over_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StepError::retryable(
                "carrier",
                "the van left without the parcel",
            ));
        }
        Ok(())
    }

    fn catch_paid_to_lost(&self, failed: order::Paid, _: &StepError) -> order::Lost {
        order::Lost { id: failed.id }
    }
}

type Durable = DurableExecutor<Order, Shop, AnyStore>;

/// Where a test's executions live.
#[derive(Clone, Debug)]
enum Db {
    Sqlite(PathBuf),
    /// The database, and how long claims hold.
    Postgres(String, Duration),
}

impl Db {
    fn sqlite(name: &str) -> Db {
        Db::Sqlite(dir(name).join("orders.db"))
    }

    /// A fresh database on the server of `DATABASE_URL`, or `None`.
    fn postgres(name: &str) -> Option<Db> {
        let url = std::env::var("DATABASE_URL").ok()?;
        let url = runtime(false).block_on(postgres::fresh_database(&url, &format!("test_{name}")));
        // Short leases: a test's dead worker is taken over quickly.
        Some(Db::Postgres(url, Duration::from_millis(500)))
    }

    /// A store for a second process beside the worker: on SQLite, opened as a client.
    async fn store_beside_worker(&self) -> AnyStore {
        match self {
            Db::Sqlite(path) => AnyStore::Sqlite(SqliteStore::open_client(path).unwrap()),
            Db::Postgres(..) => self.store().await,
        }
    }

    async fn store(&self) -> AnyStore {
        match self {
            Db::Sqlite(path) => AnyStore::Sqlite(SqliteStore::open(path).unwrap()),
            Db::Postgres(url, lease) => {
                AnyStore::Postgres(PgStore::connect_with_lease(url, *lease).await.unwrap())
            }
        }
    }

    /// Runs `sql` behind the store's back (tables as SQLite names them).
    async fn sql(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Postgres(url, _) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.batch_execute(&pg(sql)).await.unwrap();
            }
        }
    }

    /// The text `sql` selects (one row, one column).
    async fn text(&self, sql: &str) -> String {
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Db::Postgres(url, _) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.query_one(&pg(sql), &[]).await.unwrap().get(0)
            }
        }
    }
}

/// SQLite's table names as PostgreSQL's.
fn pg(sql: &str) -> String {
    sql.replace("executions", "fsm_executions")
        .replace("tokens", "fsm_tokens")
        .replace("definitions", "fsm_definitions")
}

/// How the timer tests keep time. On SQLite: tokio's paused clock, with the declared ten-minute
/// retry and one-hour wait. On PostgreSQL: the real clock (the paused clock jumps to the next
/// timer whenever the runtime waits for the database, so it cannot time a server), with both
/// shortened to 1.5 s through the builder's overrides.
struct Timers {
    paused: bool,
    retry: Duration,
    wait: Duration,
}

fn timers(db: &Db) -> Timers {
    match db {
        Db::Sqlite(_) => Timers {
            paused: true,
            retry: Duration::from_secs(600),
            wait: Duration::from_secs(3_600),
        },
        Db::Postgres(..) => Timers {
            paused: false,
            retry: Duration::from_millis(1_500),
            wait: Duration::from_millis(1_500),
        },
    }
}

async fn open_timed(db: &Db, shop: Shop, t: &Timers) -> Durable {
    let retry = fsm_core::RetryPolicy {
        max_attempts: 3,
        interval: t.retry,
        backoff_rate: 1.0,
        ..fsm_core::RetryPolicy::NONE
    };
    Executor::<Order, Shop>::builder(shop)
        .retry("Reserved", retry)
        .unwrap()
        .wait_timeout("Paid", Some(t.wait))
        .unwrap()
        .durable(db.store().await)
        .unwrap()
}

async fn open(db: &Db, shop: Shop) -> Durable {
    Executor::<Order, Shop>::builder(shop)
        .durable(db.store().await)
        .unwrap()
}

#[path = "support/any_store.rs"]
mod any_store;
#[path = "support/postgres.rs"]
mod postgres;
use any_store::AnyStore;

/// A runtime for one test: tokio's clock paused or not.
fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// A fresh PostgreSQL database for `test`; without `DATABASE_URL`, `None` after saying the
/// test was skipped (a failure where the server is required).
fn postgres_or_skip(test: &str) -> Option<Db> {
    let db = Db::postgres(test);
    if db.is_none() {
        let line = format!(
            "SKIPPED {test} on PostgreSQL: DATABASE_URL is not set (.ci/run starts a server)"
        );
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        // Past the test harness's capture of `println!`: the line shows in every run.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    db
}

/// The test `$name` on both stores: `$name::sqlite` and `$name::postgres`. `async` bodies run
/// on a runtime (`paused`: on tokio's paused clock); `sync` bodies make their own.
macro_rules! on_both_stores {
    ($name:ident, $mode:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                on_both_stores!(@run $mode, super::$name(super::Db::sqlite(stringify!($name))));
            }

            #[test]
            fn postgres() {
                let Some(db) = super::postgres_or_skip(stringify!($name)) else {
                    return;
                };
                // On PostgreSQL, tokio's clock is never paused: it would jump ahead whenever
                // the runtime waits for the server.
                on_both_stores!(@run_real $mode, super::$name(db));
            }
        }
    };
    (@run async, $call:expr) => { super::runtime(false).block_on($call) };
    (@run paused, $call:expr) => { super::runtime(true).block_on($call) };
    (@run sync, $call:expr) => { $call };
    (@run_real sync, $call:expr) => { $call };
    (@run_real $mode:ident, $call:expr) => { super::runtime(false).block_on($call) };
}

/// Keeps a timer due within a millisecond while it lives. On tokio's paused clock, whenever
/// the runtime waits for the store (a thread of its own, or a server) with nothing else to
/// do, the clock jumps to the next timer: with this one pending it moves a millisecond, not
/// to a far timer the test does not mean to reach yet (an hour-long wait's timeout, which on
/// a busy machine fired while a token was being answered: the answer was then refused as
/// `TimedOut`).
struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    fn start() -> Self {
        Ticker(tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until `f` holds, on tokio's clock (auto-advanced when paused).
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

/// The states a history's transitions entered, in order.
fn entered(history: &fsm_core::History) -> Vec<&'static str> {
    history
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Transition { to, .. } => Some(to),
            _ => None,
        })
        .collect()
}

fn deliver(o: order::Machine<order::Paid>) -> order::Machine<order::Delivered> {
    o.deliver(|s| order::Delivered { id: s.id })
}

on_both_stores!(
    an_execution_is_checkpointed_and_read_back_by_id_and_status,
    async
);
async fn an_execution_is_checkpointed_and_read_back_by_id_and_status(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let id = ex
        .start(order::Machine::new(order::Placed { id: 7 }))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    // Waiting for the carrier: stored as waiting, out of memory.
    let mut row = ex.get(id).await.unwrap();
    while row.status != ExecutionStatus::Waiting {
        tokio::time::sleep(Duration::from_millis(5)).await;
        row = ex.get(id).await.unwrap();
    }
    assert_eq!(row.status, ExecutionStatus::Waiting);
    assert_eq!(row.state_name, "Paid");
    assert!(row.state.contains("\"charge\""), "{}", row.state);
    assert_eq!(ex.in_flight(), 0, "a waiting execution holds no task");
    let waiting = ex
        .list(ListQuery::new().status(ExecutionStatus::Waiting))
        .await
        .unwrap();
    assert_eq!(
        waiting.executions.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![id]
    );

    let token = ex.steps().tokens.lock().unwrap()[0].clone();
    assert_eq!(ex.complete::<order::Paid, _>(&token, deliver).await, Ok(id));
    let row = ex.finished(id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Succeeded);
    assert_eq!(ex.state(id).await.unwrap(), Order::Delivered { id: 7 });
    let history = ex.history(id).await.unwrap();
    assert_eq!(entered(&history), ["Reserved", "Paid", "Delivered"]);
    assert_eq!(
        ex.steps().charges.lock().unwrap().as_slice(),
        [format!("{id}-step-1")]
    );
    assert!(ex
        .list(ListQuery::new().status(ExecutionStatus::Waiting))
        .await
        .unwrap()
        .executions
        .is_empty());
    assert_eq!(ex.list(ListQuery::new()).await.unwrap().executions.len(), 1);
}

/// Runs `f` on a runtime of its own, then drops the runtime with whatever is still running on
/// it, as a killed process would leave it (the store's file lock goes with the store).
fn in_a_process_that_dies<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(f());
        drop(rt);
        out
    })
    .join()
    .unwrap()
}

on_both_stores!(
    a_step_interrupted_by_a_crash_runs_again_with_the_same_idempotency_key,
    sync
);
fn a_step_interrupted_by_a_crash_runs_again_with_the_same_idempotency_key(db: Db) {
    let p = db.clone();
    let (id, first) = in_a_process_that_dies(move || {
        Box::pin(async move {
            let shop = Shop {
                charge_gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
                ..Shop::default()
            };
            let ex = open(&p, shop).await;
            let id = ex
                .start(order::Machine::new(order::Placed { id: 1 }))
                .await
                .unwrap();
            // The charge step has begun and hangs: the process dies under it.
            until(|| ex.steps().charge_times.lock().unwrap().len() == 1).await;
            let row = ex.get(id).await.unwrap();
            (id, row)
        })
    });
    assert_eq!(first.status, ExecutionStatus::Running);
    assert_eq!(
        first.state_name, "Reserved",
        "the transition to Reserved was committed"
    );
    let p = db.clone();
    let (row, charges, history) = in_a_process_that_dies(move || {
        Box::pin(async move {
            let ex = open(&p, Shop::default()).await;
            until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
            let row = ex.get(id).await.unwrap();
            let charges = ex.steps().charges.lock().unwrap().clone();
            (row, charges, ex.history(id).await.unwrap())
        })
    });
    assert_eq!(row.state_name, "Paid");
    assert_eq!(
        charges,
        [format!("{id}-step-1")],
        "the same key as before the crash"
    );
    let resumed = history
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::ExecutionResumed {
                    definition_changed: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(resumed, 1, "{history}");
    // A stored history keeps its times to the microsecond, as the clock gave them (not
    // whole milliseconds); the time the execution spent with no worker is labelled; the
    // columns stay in line.
    let text = history.to_string();
    let resumed_line = text
        .lines()
        .find(|l| l.contains("execution resumed"))
        .unwrap();
    assert!(resumed_line.contains("stopped for "), "{text}");
    let times: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        times.iter().skip(1).any(|at| !at.ends_with(".000ms")),
        "{text}"
    );
    let event = text.lines().next().unwrap().find("event").unwrap();
    assert!(
        text.lines()
            .all(|l| l.as_bytes()[event - 1] == b' ' && l.as_bytes()[event] != b' '),
        "{text}"
    );
}

on_both_stores!(
    a_retry_due_in_ten_minutes_runs_in_ten_minutes_after_a_restart,
    sync
);
fn a_retry_due_in_ten_minutes_runs_in_ten_minutes_after_a_restart(db: Db) {
    let t = timers(&db);
    let (retry, paused) = (t.retry, t.paused);
    let p = db.clone();
    let id = in_a_process_that_dies(move || {
        Box::pin(async move {
            let shop = Shop {
                charge_failures: AtomicU32::new(1),
                ..Shop::default()
            };
            let ex = open_timed(&p, shop, &timers(&p)).await;
            let id = ex
                .start(order::Machine::new(order::Placed { id: 2 }))
                .await
                .unwrap();
            loop {
                let row = ex.get(id).await.unwrap();
                if row.status == ExecutionStatus::Waiting {
                    assert_eq!(row.attempt, 2);
                    let due = row.due_at.unwrap() - row.updated_at;
                    let want = retry.as_millis() as u64;
                    assert!((want - 1_000..=want).contains(&due), "due in {due} ms");
                    assert_eq!(ex.in_flight(), 0, "a retry due later holds no task");
                    return id;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
    let p = db.clone();
    let (waited, attempts, charges) = in_a_process_that_dies(move || {
        Box::pin(async move {
            if paused {
                tokio::time::pause();
            }
            let started = tokio::time::Instant::now();
            let ex = open_timed(&p, Shop::default(), &timers(&p)).await;
            // No timer of the test's own: a paused clock moves to the executor's.
            ex.steps().charge_started.notified().await;
            let first = ex.steps().charge_times.lock().unwrap()[0];
            // Reads may be served beside the writes (PostgreSQL): wait for the checkpoint.
            let mut row = ex.get(id).await.unwrap();
            while row.state_name != "Paid" {
                tokio::task::yield_now().await;
                row = ex.get(id).await.unwrap();
            }
            let charges = ex.steps().charges.lock().unwrap().len();
            (first - started, row.attempt, charges)
        })
    });
    // Not at once, not never: when due (the restart took some of the wait).
    assert!(
        waited + Duration::from_millis(500) >= retry,
        "the retry ran after {waited:?}, not in {retry:?}"
    );
    assert!(waited <= retry + Duration::from_secs(5), "{waited:?}");
    assert_eq!((attempts, charges), (1, 1));
}

on_both_stores!(
    tokens_forged_malformed_reused_stale_or_late_are_refused_and_change_nothing,
    paused
);
async fn tokens_forged_malformed_reused_stale_or_late_are_refused_and_change_nothing(db: Db) {
    let t = timers(&db);
    let ticker = Ticker::start();
    let ex = open_timed(&db, Shop::default(), &t).await;
    let a = ex
        .start(order::Machine::new(order::Placed { id: 3 }))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    let token = ex.steps().tokens.lock().unwrap()[0].clone();
    for bad in ["", "ft1", &token[1..], &format!("{token}.0")] {
        assert_eq!(
            ex.complete::<order::Paid, _>(bad, deliver).await,
            Err(TokenError::Malformed)
        );
    }
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'f' { 'e' } else { 'f' });
    assert_eq!(
        ex.complete::<order::Paid, _>(&forged, deliver).await,
        Err(TokenError::Forged)
    );
    // Failing the token retries the wait with a new token; the first is used.
    ex.fail(&token, StepError::retryable("carrier", "lost the label"))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
    assert_eq!(
        ex.complete::<order::Paid, _>(&token, deliver).await,
        Err(TokenError::AlreadyUsed)
    );
    let second = ex.steps().tokens.lock().unwrap()[1].clone();
    // The second wait times out (no more retries): routed to Lost.
    drop(ticker);
    tokio::time::sleep(t.wait + Duration::from_millis(500)).await;
    let row = ex.finished(a).await.unwrap();
    assert_eq!(row.state_name, "Lost");
    assert_eq!(
        ex.complete::<order::Paid, _>(&second, deliver).await,
        Err(TokenError::TimedOut)
    );
    let stored = ex.store().wait_token(a, 2, 2).await.unwrap().unwrap();
    assert_eq!(stored.status, TokenStatus::TimedOut);
    let history = ex.history(a).await.unwrap().to_string();
    assert!(
        history.contains("wait started") && history.contains("step timed out"),
        "{history}"
    );
}

/// The text of every column of every token row, as one string.
async fn tokens_table(db: &Db) -> String {
    db.text(
        "SELECT coalesce(string_agg(secret_hash || execution || step || attempt || status \
         || coalesce(result, ''), ' '), '') FROM tokens",
    )
    .await
}

on_both_stores!(a_token_secret_is_stored_only_as_its_hash, async);
async fn a_token_secret_is_stored_only_as_its_hash(db: Db) {
    let id = {
        let ex = open(&db, Shop::default()).await;
        let id = ex
            .start(order::Machine::new(order::Placed { id: 5 }))
            .await
            .unwrap();
        until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
        let token = ex.steps().tokens.lock().unwrap()[0].clone();
        let secret = token.rsplit('.').next().unwrap().to_owned();
        let stored = tokens_table(&db).await;
        assert!(!stored.contains(&secret), "{stored} holds {secret}");
        let hash = ex.store().wait_token(id, 2, 1).await.unwrap().unwrap();
        assert_eq!(hash.secret_hash.len(), 64);
        assert!(stored.contains(&hash.secret_hash));
        // The store's row, with the hash in the secret's place, is no token.
        let from_row = format!("ft1.{id}.2.1.{}", &hash.secret_hash[..32]);
        assert_eq!(
            ex.complete::<order::Paid, _>(&from_row, deliver).await,
            Err(TokenError::Forged)
        );
        let before = ex.history(id).await.unwrap();
        ex.shutdown().await;
        // Back to the first schema, which stored the secret itself, as an earlier version
        // left it (no names, no claim counts, no parents, events' times in milliseconds): opening it as a
        // worker upgrades it, the token handed out still answers, and the history keeps its
        // times (to the millisecond the old schema kept).
        let (downgrade, events) = match &db {
            Db::Sqlite(_) => ("PRAGMA user_version = 1", "events"),
            Db::Postgres(..) => (
                "UPDATE fsm_meta SET value = '1' WHERE key = 'schema_version'",
                "fsm_events",
            ),
        };
        db.sql(&format!(
            "ALTER TABLE tokens RENAME COLUMN secret_hash TO secret; \
             UPDATE tokens SET secret = '{secret}'; {downgrade}; \
             DROP INDEX executions_name; DROP INDEX executions_started; \
             ALTER TABLE executions DROP COLUMN name; \
             ALTER TABLE executions DROP COLUMN claims; DROP TABLE definitions; \
             DROP INDEX executions_ended; DROP INDEX executions_created; \
             ALTER TABLE executions DROP COLUMN entered_at; \
             DROP INDEX executions_parent; ALTER TABLE executions DROP COLUMN parent"
        ))
        .await;
        db.sql(&format!("UPDATE {events} SET at = at / 1000")).await;
        (id, token, secret, before)
    };
    let (id, token, secret, before) = id;
    let ex = open(&db, Shop::default()).await;
    let stored = tokens_table(&db).await;
    assert!(!stored.contains(&secret), "{stored} holds {secret}");
    let after = ex.history(id).await.unwrap();
    let millis = |h: &fsm_core::History| -> Vec<u128> {
        h.events().iter().map(|e| e.at.as_millis()).collect()
    };
    assert_eq!(millis(&after), millis(&before));
    assert!(ex.lookup("anything").await.unwrap().is_none());
    ex.complete::<order::Paid, _>(&token, deliver)
        .await
        .unwrap();
    assert_eq!(ex.finished(id).await.unwrap().state_name, "Delivered");
}

on_both_stores!(
    a_waiting_step_run_again_after_a_crash_hands_out_a_new_token_and_either_answers,
    sync
);
fn a_waiting_step_run_again_after_a_crash_hands_out_a_new_token_and_either_answers(db: Db) {
    for answer_with_first in [true, false] {
        let p = db.clone();
        let (id, first) = in_a_process_that_dies(move || {
            Box::pin(async move {
                let shop = Shop {
                    hand_over_gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
                    ..Shop::default()
                };
                let ex = open(&p, shop).await;
                let id = ex
                    .start(order::Machine::new(order::Placed { id: 6 }))
                    .await
                    .unwrap();
                // The carrier has the token; the process dies before the step returns.
                until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
                let first = ex.steps().tokens.lock().unwrap()[0].clone();
                (id, first)
            })
        });
        let p = db.clone();
        runtime(false).block_on(async move {
            let ex = open(&p, Shop::default()).await;
            until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
            let second = ex.steps().tokens.lock().unwrap()[0].clone();
            assert_ne!(
                second, first,
                "the secret cannot be read back from the store"
            );
            let (used, other) = if answer_with_first {
                (&first, &second)
            } else {
                (&second, &first)
            };
            ex.complete::<order::Paid, _>(used, deliver).await.unwrap();
            assert_eq!(ex.finished(id).await.unwrap().state_name, "Delivered");
            let refused = ex.complete::<order::Paid, _>(other, deliver).await;
            // The wait was answered, through the other token.
            assert_eq!(refused, Err(TokenError::AlreadyUsed));
            assert_eq!(
                ex.history(id)
                    .await
                    .unwrap()
                    .events()
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::WaitCompleted { .. }))
                    .count(),
                1
            );
            ex.shutdown().await;
        });
    }
}

on_both_stores!(an_unreadable_history_row_is_a_typed_error, async);
async fn an_unreadable_history_row_is_a_typed_error(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let mut ids = Vec::new();
    for id in 1..=2 {
        ids.push(
            ex.start(order::Machine::new(order::Placed { id }))
                .await
                .unwrap(),
        );
    }
    until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
    // A column of another type than the store writes, behind its back.
    let break_it = match &db {
        Db::Sqlite(_) => format!(
            "UPDATE events SET kind = x'00ff' WHERE execution = '{}'",
            ids[0]
        ),
        Db::Postgres(..) => format!(
            "ALTER TABLE fsm_events ALTER COLUMN at TYPE text; \
             UPDATE fsm_events SET at = 'noon' WHERE execution = '{}'",
            ids[0]
        ),
    };
    db.sql(&break_it).await;
    let err = ex.store().events(ids[0]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { execution: Some(id), .. } if *id == ids[0]),
        "{err}"
    );
    assert!(err.to_string().contains("history"), "{err}");
    assert!(ex.history(ids[0]).await.is_err());
    if let Db::Sqlite(_) = db {
        // The other execution's history reads (on PostgreSQL the column's type changed for all).
        assert!(ex
            .history(ids[1])
            .await
            .unwrap()
            .to_string()
            .contains("wait started"));
    }
}

/// A machine whose steps hand the store whatever text they are given.
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Note {
    #[fsm(initial, on(write => Written))]
    Draft { text: String },
    #[fsm(terminal)]
    Written { text: String },
}

struct Scribe;

impl note::Steps for Scribe {
    async fn draft(
        &self,
        n: note::Machine<note::Draft>,
        _: Context,
    ) -> Result<note::Machine<note::Written>, StepError> {
        if n.data().text.starts_with("fail") {
            let text = n.data().text.clone();
            return Err(StepError::fatal(format!("kind\0{text}"), text));
        }
        Ok(n.write(|d| note::Written {
            text: format!("{}\0\u{1}\u{7f}", d.text),
        }))
    }
}

const UNUSUAL: &str = "nul \0 bell \u{7} escape \u{1b}[31m del \u{7f} line\r\n end";

on_both_stores!(
    nul_bytes_and_control_characters_are_stored_and_end_executions,
    async
);
async fn nul_bytes_and_control_characters_are_stored_and_end_executions(db: Db) {
    // One store for both machines: a SQLite file has one worker.
    let store = db.store().await;
    let notes = Executor::<Note, Scribe>::builder(Scribe)
        .durable(store.clone())
        .unwrap();
    // In a state's strings, both ways.
    let ok = notes
        .start(note::Machine::new(note::Draft {
            text: UNUSUAL.into(),
        }))
        .await
        .unwrap();
    let row = notes.finished(ok).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Succeeded);
    assert_eq!(
        notes.state(ok).await.unwrap(),
        Note::Written {
            text: format!("{UNUSUAL}\0\u{1}\u{7f}")
        }
    );
    // In a step's error: the execution ends, errored, once, with the error readable.
    let failing = notes
        .start(note::Machine::new(note::Draft {
            text: format!("fail {UNUSUAL}"),
        }))
        .await
        .unwrap();
    let row = notes.finished(failing).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Errored);
    let stored = row.error.unwrap();
    assert!(
        stored.starts_with("kind\\0fail nul \\0 bell \u{7}"),
        "{stored:?}"
    );
    assert!(!stored.contains('\0'), "{stored:?}");
    let history = notes.history(failing).await.unwrap();
    assert!(
        history.events().iter().any(|e| matches!(
            &e.kind,
            EventKind::StepFailed { error, .. } if error.message() == format!("fail {UNUSUAL}")
        )),
        "{history}"
    );
    // In an answer: a token failed with such an error.
    let orders = Executor::<Order, Shop>::builder(Shop::default())
        .durable(store)
        .unwrap();
    let waiting = orders
        .start(order::Machine::new(order::Placed { id: 8 }))
        .await
        .unwrap();
    until(|| orders.steps().tokens.lock().unwrap().len() == 1).await;
    let token = orders.steps().tokens.lock().unwrap()[0].clone();
    orders
        .fail(&token, StepError::fatal("carrier\0", UNUSUAL))
        .await
        .unwrap();
    let row = orders.finished(waiting).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Errored);
    assert!(row.error.unwrap().starts_with("carrier\\0: nul \\0 bell"));
}

/// Five steps in a row; each run of each step is counted.
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Chain {
    #[fsm(initial, on(go => B))]
    A { n: u32 },
    #[fsm(on(go => C))]
    B { n: u32 },
    #[fsm(on(go => D))]
    C { n: u32 },
    #[fsm(on(go => E))]
    D { n: u32 },
    #[fsm(terminal)]
    E { n: u32 },
}

#[derive(Clone, Default)]
struct Runs(Arc<Mutex<std::collections::HashMap<String, u32>>>);

impl Runs {
    fn count(&self, cx: &Context) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(cx.idempotency_key().to_string())
            .or_default() += 1;
    }
}

impl chain::Steps for Runs {
    async fn a(
        &self,
        m: chain::Machine<chain::A>,
        cx: Context,
    ) -> Result<chain::Machine<chain::B>, StepError> {
        self.count(&cx);
        Ok(m.go(|s| chain::B { n: s.n }))
    }
    async fn b(
        &self,
        m: chain::Machine<chain::B>,
        cx: Context,
    ) -> Result<chain::Machine<chain::C>, StepError> {
        self.count(&cx);
        Ok(m.go(|s| chain::C { n: s.n }))
    }
    async fn c(
        &self,
        m: chain::Machine<chain::C>,
        cx: Context,
    ) -> Result<chain::Machine<chain::D>, StepError> {
        self.count(&cx);
        Ok(m.go(|s| chain::D { n: s.n }))
    }
    async fn d(
        &self,
        m: chain::Machine<chain::D>,
        cx: Context,
    ) -> Result<chain::Machine<chain::E>, StepError> {
        self.count(&cx);
        Ok(m.go(|s| chain::E { n: s.n }))
    }
}

#[test]
fn postgres_under_serializable_or_repeatable_read_runs_each_step_once() {
    for level in ["serializable", "repeatable read"] {
        let name = format!("isolation_{}", level.replace(' ', "_"));
        let Some(Db::Postgres(url, _)) = postgres_or_skip(&name) else {
            return;
        };
        // No worker dies here: leases long enough that a busy machine (the tests run in
        // parallel) never lets one run out under a live worker, which would rightly run a
        // step again elsewhere.
        let lease = Duration::from_secs(10);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // A hardening some teams set database-wide: every session's default.
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let db = client
                .query_one("SELECT current_database()", &[])
                .await
                .unwrap()
                .get::<_, String>(0);
            client
                .batch_execute(&format!(
                    "ALTER DATABASE \"{db}\" SET default_transaction_isolation = '{level}'"
                ))
                .await
                .unwrap();
            let runs = Runs::default();
            let mut workers = Vec::new();
            for _ in 0..4 {
                let store = PgStore::connect_with_lease(&url, lease).await.unwrap();
                workers.push(
                    Executor::<Chain, Runs>::builder(runs.clone())
                        .durable(store)
                        .unwrap(),
                );
            }
            let mut ids = Vec::new();
            for n in 0..300 {
                let by = &workers[n as usize % workers.len()];
                ids.push(by.start(chain::Machine::new(chain::A { n })).await.unwrap());
            }
            for id in &ids {
                let row = workers[0].finished(*id).await.unwrap();
                assert_eq!(row.state_name, "E", "{level}");
            }
            let runs = runs.0.lock().unwrap().clone();
            assert_eq!(runs.len(), 300 * 4, "{level}");
            let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
            assert!(
                twice.is_empty(),
                "under {level}, steps ran more than once: {twice:?}"
            );
            // And no claim or checkpoint failed on the way (serialization failures, 40001).
            for w in &workers {
                let problems = w.problems();
                assert!(problems.is_empty(), "under {level}: {problems:?}");
            }
            for w in workers {
                w.shutdown().await;
            }
        });
    }
}

on_both_stores!(
    a_row_that_cannot_be_decoded_is_set_aside_once_and_the_rest_go_on,
    async
);
async fn a_row_that_cannot_be_decoded_is_set_aside_once_and_the_rest_go_on(db: Db) {
    let (ids, handed_out) = {
        let ex = open(&db, Shop::default()).await;
        let mut ids = Vec::new();
        for id in 1..=4 {
            ids.push(
                ex.start(order::Machine::new(order::Placed { id }))
                    .await
                    .unwrap(),
            );
        }
        until(|| ex.steps().tokens.lock().unwrap().len() == 4).await;
        let tokens = ex.steps().tokens.lock().unwrap().clone();
        ex.shutdown().await;
        (ids, tokens)
    };
    // One due row with a column of the wrong type and NULLs where values are expected.
    let bad = ids[0];
    let break_it = match &db {
        // SQLite's NOT NULL holds: wrong types in several columns.
        Db::Sqlite(_) => format!(
            "UPDATE executions SET attempt = 'many', version = 'x', created_at = x'00', \
             status = 'running', due_at = 0 WHERE id = '{bad}'"
        ),
        Db::Postgres(..) => format!(
            "ALTER TABLE executions ALTER COLUMN attempt DROP NOT NULL, \
             ALTER COLUMN fingerprint DROP NOT NULL, ALTER COLUMN version DROP NOT NULL; \
             UPDATE executions SET attempt = NULL, fingerprint = NULL, version = NULL, \
             status = 'running', due_at = 0 WHERE id = '{bad}'"
        ),
    };
    db.sql(&break_it).await;
    let ex = open(&db, Shop::default()).await;
    // The others of the same machine start, wait, are answered and end meanwhile.
    let new = ex
        .start(order::Machine::new(order::Placed { id: 9 }))
        .await
        .unwrap();
    for id in &ids[1..] {
        let prefix = format!("ft1.{id}.");
        let token = handed_out.iter().find(|t| t.starts_with(&prefix)).unwrap();
        ex.complete::<order::Paid, _>(token, deliver).await.unwrap();
        assert_eq!(ex.finished(*id).await.unwrap().state_name, "Delivered");
    }
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    let token = ex.steps().tokens.lock().unwrap()[0].clone();
    ex.complete::<order::Paid, _>(&token, deliver)
        .await
        .unwrap();
    assert_eq!(ex.finished(new).await.unwrap().state_name, "Delivered");
    // Well past a lease (500 ms on PostgreSQL) and the worker's one-second look: reported
    // once, naming the row.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let problems = ex.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].execution, Some(bad));
    assert!(
        matches!(
            problems[0].error,
            DurableError::Store(StoreError::Corrupt { .. })
        ),
        "{:?}",
        problems[0].error
    );
}

on_both_stores!(a_wait_timeout_fires_after_a_restart_too, sync);
fn a_wait_timeout_fires_after_a_restart_too(db: Db) {
    let t = timers(&db);
    let (wait, paused) = (t.wait, t.paused);
    let p = db.clone();
    let id = in_a_process_that_dies(move || {
        Box::pin(async move {
            let ex = open_timed(&p, Shop::default(), &timers(&p)).await;
            let id = ex
                .start(order::Machine::new(order::Placed { id: 11 }))
                .await
                .unwrap();
            // The process dies once the wait is stored (before that, the step would run
            // again after the restart, handing out its token again).
            while ex.get(id).await.unwrap().status != ExecutionStatus::Waiting {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(ex.steps().tokens.lock().unwrap().len(), 1);
            id
        })
    });
    let p = db.clone();
    let (waited, row, tokens) = in_a_process_that_dies(move || {
        Box::pin(async move {
            if paused {
                tokio::time::pause();
            }
            let started = tokio::time::Instant::now();
            let ex = open_timed(&p, Shop::default(), &timers(&p)).await;
            // No one answers: the wait times out, is retried with a new token, times out
            // again, and the catch route ends the order `Lost`.
            let row = ex.finished(id).await.unwrap();
            let tokens = ex.steps().tokens.lock().unwrap().len();
            (started.elapsed(), row, tokens)
        })
    });
    assert_eq!(row.state_name, "Lost");
    assert_eq!(
        tokens, 1,
        "the retry in the second process handed out one new token"
    );
    assert!(waited + Duration::from_secs(1) >= 2 * wait, "{waited:?}");
    assert!(waited <= 2 * wait + Duration::from_secs(60), "{waited:?}");
}

on_both_stores!(
    a_token_whose_step_failed_after_handing_it_out_is_stale,
    paused
);
async fn a_token_whose_step_failed_after_handing_it_out_is_stale(db: Db) {
    let _ticker = Ticker::start();
    let shop = Shop {
        hand_over_failures: AtomicU32::new(1),
        ..Shop::default()
    };
    let ex = open(&db, shop).await;
    let id = ex
        .start(order::Machine::new(order::Placed { id: 8 }))
        .await
        .unwrap();
    // The first hand-over fails after its token went out; the retry hands out another.
    until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
    let (first, second) = {
        let t = ex.steps().tokens.lock().unwrap();
        (t[0].clone(), t[1].clone())
    };
    assert_eq!(
        ex.complete::<order::Paid, _>(&first, deliver).await,
        Err(TokenError::Stale)
    );
    assert_eq!(
        ex.complete::<order::Paid, _>(&second, deliver).await,
        Ok(id)
    );
    assert_eq!(ex.finished(id).await.unwrap().state_name, "Delivered");
}

on_both_stores!(
    a_corrupted_row_is_set_aside_with_a_typed_error_and_the_others_go_on,
    async
);
async fn a_corrupted_row_is_set_aside_with_a_typed_error_and_the_others_go_on(db: Db) {
    let ids = {
        let ex = open(&db, Shop::default()).await;
        let mut ids = Vec::new();
        for id in 1..=4 {
            ids.push(
                ex.start(order::Machine::new(order::Placed { id }))
                    .await
                    .unwrap(),
            );
        }
        until(|| ex.steps().tokens.lock().unwrap().len() == 4).await;
        let tokens = ex.steps().tokens.lock().unwrap().clone();
        ex.shutdown().await;
        (ids, tokens)
    };
    let (ids, handed_out) = ids;
    // Break three rows in three ways, behind the store's back.
    let breaks = [
        "state = '{not json'",
        "state_name = 'Refunded'",
        "machine = 'Invoice'",
    ];
    for (id, set) in ids.iter().zip(breaks) {
        db.sql(&format!(
            "UPDATE executions SET {set}, status = 'running', due_at = 0 WHERE id = '{id}'"
        ))
        .await;
    }
    let row = |id: &ExecutionId| {
        format!("SELECT state || state_name || machine FROM executions WHERE id = '{id}'")
    };
    let mut before = Vec::new();
    for id in &ids[..3] {
        before.push(db.text(&row(id)).await);
    }

    let ex = open(&db, Shop::default()).await;
    // The good one is still waiting for its token from before.
    let good = format!("ft1.{}.", ids[3]);
    let tokens: Vec<String> = handed_out
        .into_iter()
        .filter(|t| t.starts_with(&good))
        .collect();
    ex.complete::<order::Paid, _>(&tokens[0], deliver)
        .await
        .unwrap();
    assert_eq!(
        ex.finished(ids[3]).await.unwrap().status,
        ExecutionStatus::Succeeded
    );
    for (id, expect) in ids[..2]
        .iter()
        .zip(["does not deserialize", "has no state `Refunded`"])
    {
        let err = ex.finished(*id).await.unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert!(matches!(err, DurableError::BadState { execution, .. } if execution == *id));
        assert!(ex.problems().iter().any(|p| p.execution == Some(*id)));
    }
    // Another machine's row is not this executor's to run, nor to read as an `Order`.
    let err = ex.finished(ids[2]).await.unwrap_err();
    assert_eq!(
        err,
        DurableError::WrongMachine {
            execution: ids[2],
            found: "Invoice".into()
        }
    );
    assert_eq!(ex.state(ids[2]).await.unwrap_err(), err);
    for (id, before) in ids[..3].iter().zip(&before) {
        let now = db.text(&row(id)).await;
        assert_eq!(&now, before, "a set-aside row stays as it was");
    }
}

mod v2 {
    //! The same machine, a release later: `Reserved` gained a field with a default, and
    //! `Paid` is gone (replaced by `Charged`).
    use super::*;

    #[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[fsm(module = order_v2)]
    pub enum Order {
        #[fsm(initial, on(reserve => Reserved))]
        Placed { id: u32 },
        #[fsm(on(charge => Charged | Declined))]
        Reserved {
            id: u32,
            #[serde(default)]
            note: String,
        },
        #[fsm(terminal)]
        Charged { id: u32 },
        #[fsm(terminal(failure))]
        Declined { id: u32 },
    }

    pub struct Shop;

    impl order_v2::Steps for Shop {
        async fn placed(
            &self,
            o: order_v2::Machine<order_v2::Placed>,
            _: Context,
        ) -> Result<order_v2::Machine<order_v2::Reserved>, StepError> {
            Ok(o.reserve(|s| order_v2::Reserved {
                id: s.id,
                note: String::new(),
            }))
        }

        async fn reserved(
            &self,
            o: order_v2::Machine<order_v2::Reserved>,
            _: Context,
        ) -> Result<order_v2::ReservedNext, StepError> {
            Ok(o.charge(|s| order_v2::Charged { id: s.id }).into())
        }
    }
}

on_both_stores!(
    a_changed_definition_resumes_what_still_reads_and_sets_aside_what_does_not,
    async
);
async fn a_changed_definition_resumes_what_still_reads_and_sets_aside_what_does_not(db: Db) {
    let (in_reserved, in_paid) = {
        let shop = Shop {
            charge_failures: AtomicU32::new(1),
            ..Shop::default()
        };
        let ex = open(&db, shop).await;
        let a = ex
            .start(order::Machine::new(order::Placed { id: 5 }))
            .await
            .unwrap();
        // `a` fails its charge once and waits ten minutes in `Reserved`.
        loop {
            if ex.get(a).await.unwrap().status == ExecutionStatus::Waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let b = ex
            .start(order::Machine::new(order::Placed { id: 6 }))
            .await
            .unwrap();
        loop {
            if ex.get(b).await.unwrap().state_name == "Paid" && ex.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ex.shutdown().await;
        (a, b)
    };
    // Make both due now.
    db.sql("UPDATE executions SET due_at = 0, status = 'running'")
        .await;
    let ex = Executor::<v2::Order, v2::Shop>::builder(v2::Shop)
        .durable(db.store().await)
        .unwrap();
    let row = ex.finished(in_reserved).await.unwrap();
    assert_eq!(row.state_name, "Charged");
    let history = ex.history(in_reserved).await.unwrap();
    assert!(
        history.events().iter().any(|e| matches!(
            e.kind,
            EventKind::ExecutionResumed {
                definition_changed: true,
                ..
            }
        )),
        "{history}"
    );
    let err = ex.finished(in_paid).await.unwrap_err();
    assert!(
        err.to_string().contains("has no state `Paid`")
            && err.to_string().contains("definition changed"),
        "{err}"
    );
    assert_eq!(ex.get(in_paid).await.unwrap().state_name, "Paid");
}

#[tokio::test]
async fn files_that_are_not_ours_newer_or_in_use_are_refused_and_left_as_they_were() {
    let d = dir("files");
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a database, but precious").unwrap();
    assert!(matches!(
        SqliteStore::open(&text),
        Err(StoreError::NotADatabase { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "not a database, but precious"
    );

    let foreign = d.join("app.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE users (name TEXT)")
        .unwrap();
    let before = std::fs::read(&foreign).unwrap();
    assert!(matches!(
        SqliteStore::open(&foreign),
        Err(StoreError::Foreign { .. })
    ));
    assert_eq!(std::fs::read(&foreign).unwrap(), before);

    let newer = d.join("newer.db");
    drop(SqliteStore::open(&newer).unwrap());
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteStore::open(&newer).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade fsm-core"));

    let busy = d.join("busy.db");
    let first = SqliteStore::open(&busy).unwrap();
    assert!(matches!(
        SqliteStore::open(&busy),
        Err(StoreError::Locked { .. })
    ));
    drop(first);
    SqliteStore::open(&busy).unwrap();
}

/// Set in a child process of the test below: the path it opens as a worker.
const OPEN_AS_WORKER: &str = "FSM_TEST_OPEN_AS_WORKER";

/// Opens `path` as a worker in another process (this test binary, running only the test
/// below), and says whether that process got the worker lock.
fn a_second_process_opens(path: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_worker_process_is_refused_whatever_path_names_the_file",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OPEN_AS_WORKER, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The harness writes the test's name on the line before the test's own output.
    match stdout
        .lines()
        .find_map(|l| l.split_once("worker: ").map(|(_, said)| said))
    {
        Some("opened") => Ok(()),
        Some(refused) => Err(refused.to_owned()),
        None => panic!("the child process said nothing: {stdout}"),
    }
}

#[test]
fn a_second_worker_process_is_refused_whatever_path_names_the_file() {
    if let Some(path) = std::env::var_os(OPEN_AS_WORKER) {
        match SqliteStore::open(&path) {
            Ok(_) => println!("worker: opened"),
            Err(e) => println!("worker: {e}"),
        }
        return;
    }
    let d = dir("second-worker");
    let path = d.join("orders.db");
    let worker = SqliteStore::open(&path).unwrap();
    let symlink = d.join("link.db");
    std::os::unix::fs::symlink(&path, &symlink).unwrap();
    for route in [&path, &symlink] {
        let refused = a_second_process_opens(route).unwrap_err();
        assert!(refused.contains("another worker"), "{route:?}: {refused}");
    }
    // A hard link is refused by any process, worker or not, and reading through it leaves
    // nothing behind: SQLite keeps a WAL per name, so commits in the first name's WAL would
    // be unseen through the second.
    let hard_link = d.join("hard.db");
    std::fs::hard_link(&path, &hard_link).unwrap();
    let refused = a_second_process_opens(&hard_link).unwrap_err();
    assert!(refused.contains("hard links"), "{refused}");
    let err = SqliteStore::open_with(
        &hard_link,
        SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 names (hard links)"), "{err}");
    std::fs::remove_file(&hard_link).unwrap();
    // Nothing beside the database holds the lock, so nothing can be deleted to lift it: the
    // directory holds the database, its WAL and shared memory, and the links.
    let mut files: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["link.db", "orders.db", "orders.db-shm", "orders.db-wal"]
    );
    assert!(a_second_process_opens(&symlink).is_err());
    drop(worker);
    a_second_process_opens(&symlink).unwrap();
    // In this process, once the first store is gone, through any of its names.
    let again = SqliteStore::open(&path).unwrap();
    assert!(matches!(
        SqliteStore::open(&symlink),
        Err(StoreError::Locked { .. })
    ));
    drop(again);
}

/// The descriptors this process has open on files in `dir` (other tests of this binary run
/// at the same time, with files of their own).
fn open_descriptors(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test]
async fn the_worker_lock_keeps_no_descriptor_once_its_stores_are_gone() {
    let d = dir("descriptors");
    for i in 0..100 {
        drop(SqliteStore::open(d.join(format!("{i}.db"))).unwrap());
    }
    let left = open_descriptors(&d);
    assert_eq!(left, 0, "descriptors left open on the 100 files");
    // A read-only store of a file keeps reading after the worker of the same file, in this
    // process, is gone: the worker's lock is released, its descriptor kept until the reader
    // goes (closing it would drop the reader's SQLite locks).
    let path = d.join("shared.db");
    let ex = Executor::<Order, Shop>::builder(Shop::default())
        .durable(SqliteStore::open(&path).unwrap())
        .unwrap();
    let id = ex
        .start(order::Machine::new(order::Placed { id: 1 }))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    let read_only = SqliteOptions {
        read_only: true,
        ..SqliteOptions::default()
    };
    let reader = SqliteStore::open_with(&path, read_only).unwrap();
    ex.shutdown().await;
    drop(ex);
    assert_eq!(reader.get(id).await.unwrap().unwrap().state_name, "Paid");
    // A new worker may open it meanwhile.
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(reader.get(id).await.unwrap().unwrap().state_name, "Paid");
}

#[tokio::test]
async fn the_database_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = dir("mode");
    let path = d.join("orders.db");
    let ex = Executor::<Order, Shop>::builder(Shop::default())
        .durable(SqliteStore::open(&path).unwrap())
        .unwrap();
    ex.start(order::Machine::new(order::Placed { id: 1 }))
        .await
        .unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&d).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?} has mode {mode:o}", entry.file_name());
        seen += 1;
    }
    assert_eq!(seen, 3, "the database, its WAL and its shared memory");
}

#[tokio::test]
async fn a_full_disk_or_a_read_only_file_is_a_typed_error_and_the_executor_goes_on() {
    let d = dir("full");
    let path = d.join("orders.db");
    let small = SqliteOptions {
        max_size: Some(64 * 1024),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, small).unwrap();
    let ex = Executor::<Order, Shop>::builder(Shop::default())
        .durable(store)
        .unwrap();
    let first = ex
        .start(order::Machine::new(order::Placed { id: 9 }))
        .await
        .unwrap();
    let mut full = None;
    for id in 10..5_000 {
        match ex.start(order::Machine::new(order::Placed { id })).await {
            Ok(_) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let full = full.expect("the database filled up");
    assert!(
        matches!(&full, DurableError::Store(StoreError::Full { path: p }) if *p == path),
        "{full}"
    );
    // Reads still work, and the first order is where it was; also a read sent with a write
    // that the full disk refuses (the store's writer takes both in one batch).
    let row = ex.get(first).await.unwrap();
    assert!(!row.status.is_final() || row.status == ExecutionStatus::Succeeded);
    let mut refused = 0;
    for id in 0..2_000 {
        let (started, read) = tokio::join!(
            ex.start(order::Machine::new(order::Placed { id })),
            ex.get(first)
        );
        assert_eq!(read.unwrap().id, first);
        match started {
            // Pages freed by executions that ended make room now and then.
            Ok(_) => {}
            Err(DurableError::Store(StoreError::Full { .. })) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        if refused == 20 {
            break;
        }
    }
    assert_eq!(refused, 20);
    ex.shutdown().await;
    drop(ex);

    let ro = SqliteStore::open_with(
        &path,
        SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let ex = Executor::<Order, Shop>::builder(Shop::default())
        .durable(ro)
        .unwrap();
    assert_eq!(ex.get(first).await.unwrap().id, first);
    let err = ex
        .start(order::Machine::new(order::Placed { id: 1 }))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DurableError::Store(StoreError::ReadOnly { .. })),
        "{err}"
    );
}

/// A store that loses the reply to one checkpoint: the checkpoint commits, and its writer is
/// told the database is away (as when a connection breaks after `COMMIT` was sent).
struct LosesAReply {
    store: AnyStore,
    /// Counts checkpoints down; the one that finds 1 loses its reply.
    countdown: AtomicU32,
}

impl Store for LosesAReply {
    async fn create(
        &self,
        new: fsm_core::store::NewExecution,
    ) -> Result<fsm_core::store::Created, StoreError> {
        self.store.create(new).await
    }
    async fn checkpoint(&self, cp: fsm_core::store::Checkpoint) -> Result<u64, StoreError> {
        let version = self.store.checkpoint(cp).await?;
        match self.countdown.fetch_sub(1, Ordering::SeqCst) {
            1 => Err(StoreError::Unavailable {
                message: "the connection broke after COMMIT".into(),
            }),
            _ => Ok(version),
        }
    }
    async fn claim(
        &self,
        machine: &str,
        owner: &str,
        now: fsm_core::store::Millis,
        lease_until: fsm_core::store::Millis,
        limit: usize,
    ) -> Result<Vec<Result<fsm_core::store::ExecutionRecord, StoreError>>, StoreError> {
        self.store
            .claim(machine, owner, now, lease_until, limit)
            .await
    }
    async fn next_due(&self, machine: &str) -> Result<Option<fsm_core::store::Millis>, StoreError> {
        self.store.next_due(machine).await
    }
    async fn due_now(
        &self,
        machine: &str,
        now: fsm_core::store::Millis,
    ) -> Result<bool, StoreError> {
        self.store.due_now(machine, now).await
    }
    async fn get(
        &self,
        id: ExecutionId,
    ) -> Result<Option<fsm_core::store::ExecutionRecord>, StoreError> {
        self.store.get(id).await
    }
    async fn events(
        &self,
        id: ExecutionId,
    ) -> Result<Vec<fsm_core::store::StoredEvent>, StoreError> {
        self.store.events(id).await
    }
    async fn list(
        &self,
        q: fsm_core::store::ListQuery,
    ) -> Result<fsm_core::store::Page, StoreError> {
        self.store.list(q).await
    }
    async fn token(
        &self,
        secret: &str,
    ) -> Result<Option<fsm_core::store::TokenRecord>, StoreError> {
        self.store.token(secret).await
    }
    async fn answer_token(&self, a: fsm_core::store::TokenAnswer) -> Result<bool, StoreError> {
        self.store.answer_token(a).await
    }
    async fn wait_token(
        &self,
        id: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> Result<Option<fsm_core::store::TokenRecord>, StoreError> {
        self.store.wait_token(id, step, attempt).await
    }
    fn lease(&self) -> Option<Duration> {
        self.store.lease()
    }
    async fn renew(
        &self,
        owner: &str,
        executions: &[ExecutionId],
        until: fsm_core::store::Millis,
    ) -> Result<u64, StoreError> {
        self.store.renew(owner, executions, until).await
    }
    fn work(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.store.work()
    }
    fn ended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.store.ended()
    }
}

/// PostgreSQL only (SQLite has one worker process and no connection to lose): a worker told
/// that a checkpoint failed drops the execution and lets its lease run out, even while it
/// renews the leases of the executions it still drives; the execution is then claimed again
/// and goes on from the checkpoint, which had committed.
#[test]
fn an_execution_whose_checkpoint_reply_was_lost_is_taken_up_again_when_its_lease_runs_out() {
    let test =
        "an_execution_whose_checkpoint_reply_was_lost_is_taken_up_again_when_its_lease_runs_out";
    let Some(db) = postgres_or_skip(test) else {
        return;
    };
    runtime(false).block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let shop = Shop {
            charge_gate: Some(gate.clone()),
            ..Shop::default()
        };
        // The second checkpoint loses its reply: the first is B's, at Reserved.
        let store = LosesAReply {
            store: db.store().await,
            countdown: AtomicU32::new(2),
        };
        let ex = Executor::<Order, Shop>::builder(shop)
            .durable(store)
            .unwrap();
        // B is driven by this worker all along (its charge waits at the gate), so the worker
        // renews leases throughout.
        let b = ex
            .start(order::Machine::new(order::Placed { id: 1 }))
            .await
            .unwrap();
        until(|| ex.steps().charge_times.lock().unwrap().len() == 1).await;
        let a = ex
            .start(order::Machine::new(order::Placed { id: 2 }))
            .await
            .unwrap();
        // A's checkpoint at Reserved committed, but the worker was told otherwise: it dropped
        // A. Once A's lease (500 ms) runs out, A is claimed again and its charge starts.
        let began = std::time::Instant::now();
        until(|| ex.steps().charge_times.lock().unwrap().len() == 2).await;
        let waited = began.elapsed();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(ex.get(a).await.unwrap().state_name, "Reserved");
        gate.add_permits(2);
        // Both charged once, and waiting for the carrier.
        until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
        for id in [a, b] {
            assert_eq!(ex.get(id).await.unwrap().state_name, "Paid");
        }
        let history = ex.history(a).await.unwrap();
        assert!(
            history
                .events()
                .iter()
                .any(|e| matches!(e.kind, EventKind::ExecutionResumed { .. })),
            "{history}"
        );
        assert_eq!(ex.steps().charges.lock().unwrap().len(), 2);
        assert!(ex.problems().is_empty(), "{:?}", ex.problems());
    });
}

on_both_stores!(
    one_bad_write_among_many_committed_together_fails_alone,
    async
);
/// Writes committed together (a batch, on either store) fail one by one: a checkpoint whose
/// events clash with the stored ones is refused with a typed error and changes nothing, and
/// the others of its batch, sent at the same moment, commit.
async fn one_bad_write_among_many_committed_together_fails_alone(db: Db) {
    use fsm_core::store::{Checkpoint, ExecutionRecord, NewExecution, StoredEvent};
    let store = db.store().await;
    let event = |seq: u32| StoredEvent {
        seq,
        at_micros: u64::from(seq),
        kind: "transition".into(),
        state: "Placed".into(),
        detail: "null".into(),
    };
    let record = |n: u128| ExecutionRecord {
        id: ExecutionId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n),
        machine: "Order".into(),
        fingerprint: "f".into(),
        state_name: "Placed".into(),
        state: format!(r#"{{"Placed":{{"id":{n}}}}}"#),
        status: ExecutionStatus::Running,
        waiting_for: None,
        step: 0,
        attempt: 1,
        entered_at: 1,
        due_at: None,
        error: None,
        events: 1,
        created_at: 1,
        updated_at: 1,
        lease_owner: Some("test".into()),
        lease_expires: None,
        version: 1,
        name: None,
        claims: 1,
        parent: None,
    };
    let creates = (0..20u128).map(|n| {
        store.create(NewExecution {
            record: record(n),
            events: vec![event(0)],
            token: None,
        })
    });
    for created in futures_join_all(creates).await {
        created.unwrap();
    }
    // Twenty checkpoints at once; the seventh repeats event 0.
    let checkpoints = (0..20u128).map(|n| {
        let mut moved = record(n);
        moved.state_name = "Reserved".into();
        moved.state = format!(r#"{{"Reserved":{{"id":{n}}}}}"#);
        moved.events = 2;
        store.checkpoint(Checkpoint {
            record: moved,
            events: vec![event(if n == 7 { 0 } else { 1 })],
            new_token: None,
            close_tokens: Vec::new(),
        })
    });
    let outcomes = futures_join_all(checkpoints).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        let row = store.get(record(n as u128).id).await.unwrap().unwrap();
        let events = store.events(row.id).await.unwrap();
        if n == 7 {
            assert!(
                matches!(outcome, Err(StoreError::Database { .. })),
                "{outcome:?}"
            );
            assert_eq!((row.state_name.as_str(), row.version), ("Placed", 1));
            assert_eq!(events, vec![event(0)]);
        } else {
            assert_eq!(outcome, &Ok(2));
            assert_eq!((row.state_name.as_str(), row.version), ("Reserved", 2));
            assert_eq!(events, vec![event(0), event(1)]);
        }
    }
}

/// Polls `futures` together (they reach the store's writer at the same moment) and returns
/// their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(&mut outputs) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *output = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// PostgreSQL only (a SQLite claim holds until its process ends): a worker whose lease ran out
/// and was taken over by another cannot renew it or checkpoint afterwards; the new holder can.
#[test]
fn a_worker_whose_lease_was_taken_over_can_neither_renew_nor_checkpoint() {
    use fsm_core::store::{Checkpoint, ExecutionRecord, NewExecution};
    let test = "a_worker_whose_lease_was_taken_over_can_neither_renew_nor_checkpoint";
    let Some(Db::Postgres(url, _)) = postgres_or_skip(test) else {
        return;
    };
    runtime(false).block_on(async {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let a = PgStore::connect(&url).await.unwrap();
        let b = PgStore::connect(&url).await.unwrap();
        let id = ExecutionId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let row = ExecutionRecord {
            id,
            machine: "Order".into(),
            fingerprint: "f".into(),
            state_name: "Placed".into(),
            state: r#"{"Placed":{"id":1}}"#.into(),
            status: ExecutionStatus::Running,
            waiting_for: None,
            step: 0,
            attempt: 1,
            entered_at: now(),
            due_at: Some(0),
            error: None,
            events: 0,
            created_at: now(),
            updated_at: now(),
            lease_owner: None,
            lease_expires: None,
            version: 1,
            name: None,
            claims: 0,
            parent: None,
        };
        a.create(NewExecution {
            record: row.clone(),
            events: Vec::new(),
            token: None,
        })
        .await
        .unwrap();
        // A claims it for 100 ms, and stalls past that.
        let t = now();
        let claim = |store: &PgStore, owner: &'static str, until: u64| {
            let store = store.clone();
            async move {
                let rows = store.claim("Order", owner, t, until, 10).await.unwrap();
                rows.into_iter().map(Result::unwrap).collect::<Vec<_>>()
            }
        };
        let held_by_a = claim(&a, "A", t + 100).await;
        assert_eq!(held_by_a.len(), 1);
        assert_eq!(claim(&b, "B", t + 10_000).await, vec![]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = now();
        let held_by_b: Vec<ExecutionRecord> = b
            .claim("Order", "B", t, t + 10_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(held_by_b.len(), 1);
        assert!(held_by_b[0].version > held_by_a[0].version);
        // A wakes up: its renewal finds nothing of its own, its checkpoint is refused.
        assert_eq!(a.renew("A", &[id], now() + 10_000).await.unwrap(), 0);
        let moved = |by: &ExecutionRecord, owner: &str| Checkpoint {
            record: ExecutionRecord {
                state_name: "Reserved".into(),
                state: format!(r#"{{"Reserved":{{"id":1,"by":"{owner}"}}}}"#),
                ..by.clone()
            },
            events: Vec::new(),
            new_token: None,
            close_tokens: Vec::new(),
        };
        assert_eq!(
            a.checkpoint(moved(&held_by_a[0], "A")).await,
            Err(StoreError::Conflict { execution: id })
        );
        let version = b.checkpoint(moved(&held_by_b[0], "B")).await.unwrap();
        let stored = b.get(id).await.unwrap().unwrap();
        assert_eq!(stored.version, version);
        assert_eq!(stored.lease_owner.as_deref(), Some("B"));
        assert!(stored.state.contains(r#""by":"B""#), "{}", stored.state);
        assert_eq!(b.renew("B", &[id], now() + 10_000).await.unwrap(), 1);
    });
}

/// SQLite: a worker holding a running execution leaves its due time as it was from step to
/// step (it is the worker's to run; the store's index of due executions is not rewritten at
/// every checkpoint). When the next worker opens the file after a crash and frees what the
/// last one held, the execution is due from its last checkpoint: the monitor's backlog
/// counts from there, not from when the execution started.
#[test]
fn a_held_execution_keeps_its_due_time_and_is_due_from_its_last_checkpoint_once_freed() {
    let db = Db::sqlite("held_due");
    let Db::Sqlite(path) = &db else {
        unreachable!("a SQLite database")
    };
    runtime(false).block_on(async {
        let (place, charge) = (
            Arc::new(tokio::sync::Semaphore::new(0)),
            Arc::new(tokio::sync::Semaphore::new(0)),
        );
        let worker = open(
            &db,
            Shop {
                place_gate: Some(place.clone()),
                charge_gate: Some(charge.clone()),
                ..Shop::default()
            },
        )
        .await;
        let id = worker
            .start(order::Machine::new(order::Placed { id: 4 }))
            .await
            .unwrap();
        // The first step ends well after the start: its checkpoint is at a later time.
        tokio::time::sleep(Duration::from_millis(30)).await;
        place.add_permits(1);
        until(|| worker.steps().charge_times.lock().unwrap().len() == 1).await;
        let held = worker.get(id).await.unwrap();
        assert_eq!(held.state_name, "Reserved");
        assert_eq!(held.status, ExecutionStatus::Running);
        assert!(held.updated_at >= held.created_at + 30, "{held:?}");
        assert_eq!(held.due_at, Some(held.created_at), "{held:?}");
        // The file as a crash leaves it (the worker is charging, and writes nothing).
        let image = dir("held_due_image").join("orders.db");
        std::fs::copy(path, &image).unwrap();
        let wal = |p: &std::path::Path| p.with_file_name("orders.db-wal");
        std::fs::copy(wal(path), wal(&image)).unwrap();
        let next = SqliteStore::open(&image).unwrap();
        let freed = next.get(id).await.unwrap().unwrap();
        assert_eq!(freed.lease_owner, None);
        assert_eq!(freed.state_name, "Reserved");
        assert_eq!(freed.due_at, Some(held.updated_at), "{freed:?}");
        charge.add_permits(1);
    });
}

/// A worker, a client that runs nothing, and order `order` started by the client.
async fn worker_and_client(
    db: &Db,
    order: u32,
) -> (Durable, DurableClient<Order, AnyStore>, ExecutionId) {
    let worker = open(db, Shop::default()).await;
    // On SQLite one process opens the file: the client shares the worker's store. On
    // PostgreSQL it could be in any process.
    let client = DurableClient::<Order, _>::new(match db {
        Db::Sqlite(_) => worker.store().clone(),
        Db::Postgres(..) => db.store().await,
    });
    let id = client
        .start(order::Machine::new(order::Placed { id: order }))
        .await
        .unwrap();
    (worker, client, id)
}

on_both_stores!(a_client_that_runs_nothing_starts_reads_and_answers, async);
/// A `DurableClient` (no step handlers, no tasks) starts an execution that a worker runs,
/// reads it back, and completes its wait; a used token is refused to it as to a worker.
async fn a_client_that_runs_nothing_starts_reads_and_answers(db: Db) {
    let (worker, client, id) = worker_and_client(&db, 4).await;
    // The carrier has its token once the wait is checkpointed.
    let mut row = client.get(id).await.unwrap();
    for _ in 0..2_000 {
        if row.status == ExecutionStatus::Waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        row = client.get(id).await.unwrap();
    }
    assert_eq!(
        (row.state_name.as_str(), row.status),
        ("Paid", ExecutionStatus::Waiting)
    );
    assert_eq!(worker.steps().tokens.lock().unwrap().len(), 1);
    assert!(matches!(
        client.state(id).await.unwrap(),
        Order::Paid { id: 4, .. }
    ));
    let token = worker.steps().tokens.lock().unwrap()[0].clone();
    assert_eq!(
        client.complete::<order::Paid, _>(&token, deliver).await,
        Ok(id)
    );
    let done = client.finished(id).await.unwrap();
    assert_eq!(
        (done.state_name.as_str(), done.status),
        ("Delivered", ExecutionStatus::Succeeded)
    );
    let history = client.history(id).await.unwrap();
    assert_eq!(entered(&history), ["Reserved", "Paid", "Delivered"]);
    assert_eq!(
        client
            .list(ListQuery::new().status(ExecutionStatus::Succeeded))
            .await
            .unwrap()
            .executions
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(
        client
            .fail(&token, StepError::fatal("carrier", "lost"))
            .await,
        Err(TokenError::AlreadyUsed)
    );
    assert_eq!(worker.steps().charges.lock().unwrap().len(), 1);
}

/// PostgreSQL only: a worker that shuts down hands the executions it is driving over at their
/// next checkpoints (leases released, other workers woken), not when its leases run out.
#[test]
fn a_worker_that_shuts_down_hands_its_executions_over_at_once() {
    let test = "a_worker_that_shuts_down_hands_its_executions_over_at_once";
    let Some(Db::Postgres(url, _)) = postgres_or_skip(test) else {
        return;
    };
    runtime(false).block_on(async {
        // Leases far longer than the test may take: only a handover can be that quick.
        let lease = Duration::from_secs(60);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let a = Executor::<Order, Shop>::builder(Shop {
            charge_gate: Some(gate.clone()),
            ..Shop::default()
        })
        .durable(PgStore::connect_with_lease(&url, lease).await.unwrap())
        .unwrap();
        let id = a
            .start(order::Machine::new(order::Placed { id: 3 }))
            .await
            .unwrap();
        until(|| a.steps().charge_times.lock().unwrap().len() == 1).await;
        let b = Executor::<Order, Shop>::builder(Shop::default())
            .durable(PgStore::connect_with_lease(&url, lease).await.unwrap())
            .unwrap();
        // A is charging: B leaves the execution alone.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(b.steps().tokens.lock().unwrap().is_empty());
        let stopping = tokio::spawn({
            let a = a.clone();
            async move { a.shutdown().await }
        });
        let began = std::time::Instant::now();
        gate.add_permits(1);
        stopping.await.unwrap();
        // A checkpointed Paid and let go; B runs the Paid step (it hands out the token).
        until(|| b.steps().tokens.lock().unwrap().len() == 1).await;
        let took = began.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(a.steps().tokens.lock().unwrap().is_empty());
        let row = b.get(id).await.unwrap();
        assert_eq!(row.state_name, "Paid");
        assert_eq!(a.steps().charges.lock().unwrap().len(), 1);
    });
}

on_both_stores!(
    a_client_waiting_for_an_execution_hears_of_its_end_at_once,
    async
);
/// `DurableClient::finished` returns as soon as a worker ends the execution (the store tells
/// it: on PostgreSQL by `NOTIFY`), not at its next look a second later.
async fn a_client_waiting_for_an_execution_hears_of_its_end_at_once(db: Db) {
    let (worker, client, id) = worker_and_client(&db, 6).await;
    until(|| worker.steps().tokens.lock().unwrap().len() == 1).await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            let row = client.finished(id).await.unwrap();
            (row, std::time::Instant::now())
        }
    });
    // The client has looked, and waits: its next look of its own is 1 s after the last.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let token = worker.steps().tokens.lock().unwrap()[0].clone();
    let answered = std::time::Instant::now();
    client
        .complete::<order::Paid, _>(&token, deliver)
        .await
        .unwrap();
    let (row, heard) = waiting.await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Succeeded);
    let after = heard - answered;
    assert!(after < Duration::from_millis(400), "{after:?}");
}

on_both_stores!(
    a_named_start_starts_one_execution_and_its_name_finds_it,
    async
);
async fn a_named_start_starts_one_execution_and_its_name_finds_it(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let client = DurableClient::<Order, _>::new(db.store_beside_worker().await);
    let first = client
        .start_named("order-9", order::Machine::new(order::Placed { id: 9 }))
        .await
        .unwrap();
    assert!(first.created);
    // A retry (the client crashed after the commit, a load balancer sent it again) starts
    // nothing, whatever it carries, from the client or from the worker.
    let again = client
        .start_named("order-9", order::Machine::new(order::Placed { id: 10 }))
        .await
        .unwrap();
    assert_eq!(
        again,
        fsm_core::Started {
            id: first.id,
            created: false
        }
    );
    let from_worker = ex
        .start_named("order-9", order::Machine::new(order::Placed { id: 11 }))
        .await
        .unwrap();
    assert_eq!(from_worker, again);
    let refused = client
        .start_with(
            fsm_core::StartOptions::named("order-9").if_name_taken(fsm_core::IfNameTaken::Fail),
            order::Machine::new(order::Placed { id: 12 }),
        )
        .await;
    assert_eq!(
        refused,
        Err(DurableError::NameTaken {
            name: "order-9".into(),
            execution: first.id
        })
    );
    for (bad, reason) in [
        ("", "it is empty"),
        ("a\nb", "it has a control character"),
        (&"x".repeat(257)[..], "it is longer than 256 bytes"),
    ] {
        match client
            .start_named(bad, order::Machine::new(order::Placed { id: 1 }))
            .await
        {
            Err(DurableError::BadName { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Found by its name, as a summary; its data by its id.
    let found = client.lookup("order-9").await.unwrap().unwrap();
    assert_eq!(found.id, first.id);
    assert_eq!(found.name.as_deref(), Some("order-9"));
    assert!(client.lookup("order-8").await.unwrap().is_none());
    until_async(|| async { ex.steps().tokens.lock().unwrap().len() == 1 }).await;
    assert!(matches!(
        client.state(first.id).await.unwrap(),
        Order::Paid { id: 9, .. }
    ));
    let all = client.list(ListQuery::new()).await.unwrap();
    assert_eq!(all.executions.len(), 1, "one execution: {all:?}");
    assert_eq!(ex.steps().placed.load(Ordering::SeqCst), 1);
}

/// Waits until the async condition holds.
async fn until_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    for _ in 0..10_000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

on_both_stores!(lists_filter_order_and_page_with_a_cursor, async);
async fn lists_filter_order_and_page_with_a_cursor(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let mut ids = Vec::new();
    // 25 orders: id 0 is declined (failed), the others wait for the carrier.
    for n in 0..25u32 {
        let name = format!("{}-{n:02}", if n % 2 == 0 { "even" } else { "odd" });
        let started = ex
            .start_named(name, order::Machine::new(order::Placed { id: n }))
            .await
            .unwrap();
        ids.push(started.id);
        // Distinct start times, so that a time range splits them.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until(|| ex.steps().tokens.lock().unwrap().len() == 24).await;
    ex.idle().await;
    // Every page of 10, oldest first, continues where the last ended.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let mut q = ListQuery::new().limit(10);
        if let Some(c) = cursor {
            q = q.after(c);
        }
        let page = ex.list(q).await.unwrap();
        pages += 1;
        seen.extend(page.executions.iter().map(|e| e.id));
        match page.next {
            Some(next) => {
                // The cursor travels as text (a URL, a command line).
                let text = next.to_string();
                cursor = Some(text.parse::<fsm_core::Cursor>().unwrap());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
    // Newest first.
    let newest = ex
        .list(ListQuery::new().newest_first().limit(3))
        .await
        .unwrap();
    let newest: Vec<_> = newest.executions.iter().map(|e| e.id).collect();
    assert_eq!(
        newest,
        ids.iter().rev().take(3).copied().collect::<Vec<_>>()
    );
    // By status, state and name prefix, with typed summaries.
    let failed = ex
        .list(ListQuery::new().status(ExecutionStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.executions.len(), 1);
    let declined = &failed.executions[0];
    assert_eq!(
        (
            declined.id,
            declined.state_name.as_str(),
            declined.name.as_deref()
        ),
        (ids[0], "Declined", Some("even-00"))
    );
    let waiting = ex
        .list(ListQuery::new().state("Paid").name_prefix("odd-").limit(0))
        .await
        .unwrap();
    assert_eq!(waiting.executions.len(), 12);
    assert!(waiting.next.is_none());
    assert!(waiting
        .executions
        .iter()
        .all(|e| e.status == ExecutionStatus::Waiting
            && e.waiting_for == Some(fsm_core::WaitingFor::Token)
            && e.name.as_deref().is_some_and(|n| n.starts_with("odd-"))));
    // A prefix is a prefix, not a pattern.
    let none = ex.list(ListQuery::new().name_prefix("%")).await.unwrap();
    assert!(none.executions.is_empty());
    // By start time: from the 11th on, before the 21st.
    let summary = |i: usize| {
        let id = ids[i];
        let ex = ex.clone();
        async move { ex.get(id).await.unwrap().created_at }
    };
    let (from, to) = (summary(10).await, summary(20).await);
    let range = ex
        .list(ListQuery::new().started_after(from).started_before(to))
        .await
        .unwrap();
    let range: Vec<_> = range.executions.iter().map(|e| e.id).collect();
    // (On PostgreSQL, times go to the server's clock and back, by an offset measured to the
    // millisecond: the ends may move by one start.)
    assert!(ids[11..19].iter().all(|id| range.contains(id)), "{range:?}");
    assert!(range.iter().all(|id| ids[9..21].contains(id)), "{range:?}");
    // By the state's data: the text as stored (serde's JSON), no pattern.
    let thirteen = ex
        .list(ListQuery::new().data_contains("\"id\":13,"))
        .await
        .unwrap();
    let thirteen: Vec<_> = thirteen.executions.iter().map(|e| e.id).collect();
    assert_eq!(thirteen, vec![ids[13]]);
    let pattern = ex
        .list(ListQuery::new().data_contains("%id%"))
        .await
        .unwrap();
    assert!(pattern.executions.is_empty());
    // By ids, in the query's order; an id not stored is left out.
    let chosen = ex
        .list(ListQuery::new().ids([ids[5], fsm_core::ExecutionId::from_u128(7), ids[3]]))
        .await
        .unwrap();
    let chosen: Vec<_> = chosen.executions.iter().map(|e| e.id).collect();
    assert_eq!(chosen, vec![ids[3], ids[5]]);
    assert_eq!(
        ex.store()
            .count(
                ListQuery::new()
                    .ids(ids[..7].iter().copied())
                    .status(ExecutionStatus::Waiting)
            )
            .await
            .unwrap(),
        6
    );
    // Counted by state, and by status alone (from the status index).
    let now = ex.get(ids[24]).await.unwrap().updated_at + 1;
    let counts = |s: fsm_core::store::Stats| {
        s.counts
            .into_iter()
            .map(|c| (c.machine, c.state, c.status.as_str(), c.count))
            .collect::<Vec<_>>()
    };
    let stats = ex.store().stats(None, now, 2).await.unwrap();
    assert_eq!(stats.oldest_waits.len(), 2);
    assert_eq!(
        counts(stats),
        [
            ("Order".into(), "Declined".into(), "failed", 1),
            ("Order".into(), "Paid".into(), "waiting", 24)
        ]
    );
    let overview = ex.store().overview(Some("Order"), now, 2).await.unwrap();
    assert_eq!(overview.oldest_waits.len(), 2);
    assert_eq!(
        counts(overview),
        [
            ("Order".into(), String::new(), "failed", 1),
            ("Order".into(), String::new(), "waiting", 24)
        ]
    );
    // Another machine's executions are not this machine's.
    let other = ex
        .store()
        .list(ListQuery::new().machine("Other"))
        .await
        .unwrap();
    assert!(other.executions.is_empty());
}

on_both_stores!(a_fresh_worker_is_not_idle_while_executions_are_due, async);
async fn a_fresh_worker_is_not_idle_while_executions_are_due(db: Db) {
    // Three executions started by a client, with no worker running.
    let client = DurableClient::<Order, _>::new(db.store().await);
    let mut ids = Vec::new();
    for id in [0, 0, 0] {
        ids.push(
            client
                .start(order::Machine::new(order::Placed { id }))
                .await
                .unwrap(),
        );
    }
    drop(client);
    let ex = open(&db, Shop::default()).await;
    ex.idle().await;
    for id in ids {
        let row = ex.get(id).await.unwrap();
        assert_eq!(row.state_name, "Declined", "{row:?}");
        // Claimed once, for the first time: not a resumption.
        let history = ex.history(id).await.unwrap();
        assert!(
            !history.to_string().contains("execution resumed"),
            "{history}"
        );
    }
}

on_both_stores!(a_worker_serves_until_it_is_told_to_stop, async);
async fn a_worker_serves_until_it_is_told_to_stop(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let ex = ex.clone();
        async move {
            ex.serve(async {
                stopped.await.ok();
            })
            .await
        }
    });
    let client = DurableClient::<Order, _>::new(db.store_beside_worker().await);
    let declined = client
        .start(order::Machine::new(order::Placed { id: 0 }))
        .await
        .unwrap();
    assert_eq!(
        client.finished(declined).await.unwrap().status,
        ExecutionStatus::Failed
    );
    assert!(!serving.is_finished(), "it serves until told");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ex.in_flight(), 0);
    // Stopped: what is started now waits for the next worker.
    let later = client
        .start(order::Machine::new(order::Placed { id: 0 }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.get(later).await.unwrap().status,
        ExecutionStatus::Running
    );
}

on_both_stores!(
    a_worker_killed_in_the_first_step_records_the_resumption,
    sync
);
fn a_worker_killed_in_the_first_step_records_the_resumption(db: Db) {
    let p = db.clone();
    let id = in_a_process_that_dies(move || {
        Box::pin(async move {
            let shop = Shop {
                place_gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
                ..Shop::default()
            };
            let ex = open(&p, shop).await;
            let id = ex
                .start(order::Machine::new(order::Placed { id: 0 }))
                .await
                .unwrap();
            until(|| ex.steps().placed.load(Ordering::SeqCst) == 1).await;
            id
        })
    });
    let history = runtime(false).block_on(async move {
        let ex = open(&db, Shop::default()).await;
        ex.finished(id).await.unwrap();
        ex.history(id).await.unwrap()
    });
    let kinds: Vec<&str> = history.events().iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds[..3],
        ["execution started", "execution resumed", "step started"],
        "{history}"
    );
}

on_both_stores!(a_history_says_who_answered_a_wait, async);
async fn a_history_says_who_answered_a_wait(db: Db) {
    let ex = open(&db, Shop::default()).await;
    let webhook = DurableClient::<Order, _>::new(db.store_beside_worker().await)
        .answering_as("carrier-webhook");
    let a = ex
        .start(order::Machine::new(order::Placed { id: 1 }))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    let token: TaskToken = ex.steps().tokens.lock().unwrap()[0].parse().unwrap();
    // The token as the step had it, or as text: one type.
    webhook
        .complete::<order::Paid, _>(&token, deliver)
        .await
        .unwrap();
    let history = ex.history(ex.finished(a).await.unwrap().id).await.unwrap();
    let answered = history
        .events()
        .iter()
        .find(|e| matches!(e.kind, EventKind::WaitCompleted { .. }))
        .unwrap();
    assert_eq!(
        answered.kind,
        EventKind::WaitCompleted {
            state: "Paid",
            attempt: 1,
            by: Some("carrier-webhook".into()),
            by_hand: false,
        }
    );
    assert!(
        history.to_string().contains("answered by carrier-webhook"),
        "{history}"
    );
    // A failure through the token says who failed it too.
    let b = ex
        .start(order::Machine::new(order::Placed { id: 2 }))
        .await
        .unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
    let text = ex.steps().tokens.lock().unwrap()[1].clone();
    webhook
        .answering_as("ops:alice")
        .fail(text.as_str(), StepError::fatal("lost", "the van burnt"))
        .await
        .unwrap();
    ex.finished(b).await.unwrap();
    let history = ex.history(b).await.unwrap().to_string();
    assert!(
        history.contains("wait failed") && history.contains("answered by ops:alice"),
        "{history}"
    );
}

#[path = "durable/monitor.rs"]
mod monitor;
#[path = "durable/ops.rs"]
mod ops;
