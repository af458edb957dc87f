//! The crash test: 200 checkouts on a SQLite file, run by a child process that the test
//! SIGKILLs at random moments (seeded; the seed is printed) at least 20 times, starting a new
//! child each time, until every execution has ended. Each checkout labels its 3 parcels in a
//! Map state (a machine of two steps per parcel, 2 at once) and tells the customer and the
//! warehouse in a Parallel state: 5 branches per order, each an execution of its own. Then it
//! checks, from the store and from the services' ledger: every execution ended and none was
//! lost; each order was charged exactly once, each parcel labelled and each notice sent with
//! its branch's key, and the join received them all; every order's branches are stored,
//! linked to it, ended, with the ids derived from it; every stored history (the branches'
//! too) is a path of its definition; branches were resumed where they were; no execution ran
//! steps in two processes at once.
//!
//! With `DATABASE_URL`, the same on PostgreSQL with 1,000 checkouts shared by 4 worker
//! processes, one killed at a time; and with `FSM_PG_CTL` too (the server's `pg_ctl` with its
//! `-D`, as `.ci/run` sets it), the database going away: 1,000 checkouts on 4 workers while
//! the server is restarted three times (once in `immediate` mode, as after a crash), with the
//! same checks.
//!
//! `FSM_CRASH_SEED=<n> cargo test --test crash` repeats a run.
//!
//! The same binary is the child (`crash --child <dir> [url]`): a worker on the store, with a
//! fake payment gateway and a fake carrier that keep their ledger in a second SQLite file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fsm_core::{
    Context, DurableClient, DurableError, DurableOptions, EventKind, ExecutionStatus, Executor,
    Fsm, PgStore, SqliteStore, StepError, Store, StoreError, TaskToken,
};
use serde::{Deserialize, Serialize};

#[path = "support/any_store.rs"]
mod any_store;
#[path = "support/postgres.rs"]
mod postgres;
use any_store::AnyStore;

const MIN_KILLS: u32 = 20;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Checkout {
    #[fsm(initial, on(reserve => Packing))]
    Placed { order: u32 },
    #[fsm(map(Parcel, max_concurrency = 2), on(pack => Notifying))]
    Packing { order: u32 },
    #[fsm(parallel(customer = Notice, warehouse = Notice), on(notify => Reserved))]
    Notifying { order: u32, labels: Vec<String> },
    #[fsm(on(charge => Paid), retry(max_attempts = 5, interval_ms = 1_200, backoff_rate = 1.0))]
    Reserved { order: u32, sent: Sent },
    #[fsm(wait(timeout_ms = 60_000), on(deliver => Delivered))]
    Paid {
        order: u32,
        payment: String,
        sent: Sent,
    },
    #[fsm(terminal)]
    Delivered {
        order: u32,
        payment: String,
        sent: Sent,
    },
}

/// What the branches did for an order, as the joins received it: each parcel's label, each
/// notice's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sent {
    labels: Vec<String>,
    notices: Vec<String>,
}

/// A parcel of an order: weighed, then labelled (two steps, so that a kill between them
/// leaves a branch half done).
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Parcel {
    #[fsm(initial, on(weigh => Weighed))]
    Boxed { order: u32, n: u32 },
    #[fsm(on(label => Labelled))]
    Weighed { order: u32, n: u32, grams: u32 },
    #[fsm(terminal)]
    Labelled { order: u32, n: u32, label: String },
}

/// A notice of an order, to the customer or the warehouse.
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Notice {
    #[fsm(initial, on(send => Delivered))]
    Queued { order: u32, to: String },
    #[fsm(terminal)]
    Delivered { order: u32, key: String },
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The fake services' ledger: every charge (keyed by idempotency key, so a retried or
/// re-run charge is not made twice), every step run (which process, when), every token the
/// carrier was given.
fn ledger(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, ord INTEGER NOT NULL, pid INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS charge_calls (key TEXT NOT NULL, pid INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS steps (execution TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER NOT NULL,
             started INTEGER NOT NULL, ended INTEGER);
         CREATE TABLE IF NOT EXISTS carrier (token TEXT PRIMARY KEY, ord INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE IF NOT EXISTS sent (key TEXT PRIMARY KEY, ord INTEGER NOT NULL, what TEXT NOT NULL);",
    )
    .unwrap();
    conn
}

/// The child's services.
struct Shop {
    ledger: Mutex<rusqlite::Connection>,
    pid: u32,
}

impl Shop {
    /// Records that a step of `cx.execution` in `state` runs in this process; returns its row.
    fn step_started(&self, cx: &Context, state: &str) -> i64 {
        let conn = self.ledger.lock().unwrap();
        conn.execute(
            "INSERT INTO steps (execution, state, pid, started) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![cx.execution.to_string(), state, self.pid, now_ns()],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn step_ended(&self, row: i64) {
        let conn = self.ledger.lock().unwrap();
        conn.execute(
            "UPDATE steps SET ended = ?2 WHERE rowid = ?1",
            rusqlite::params![row, now_ns()],
        )
        .unwrap();
    }

    /// Some work, for a while (the kills land inside steps as well as between them).
    async fn work(&self, order: u32, salt: u32) {
        let ms = 5 + (order.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 7) % 30;
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }

    /// A branch's work for `order` (a label, a notice), done once per idempotency key.
    async fn send(&self, cx: &Context, state: &str, order: u32, what: &str) -> String {
        let row = self.step_started(cx, state);
        self.work(order, cx.step).await;
        let key = cx.idempotency_key().to_string();
        self.ledger
            .lock()
            .unwrap()
            .execute(
                "INSERT OR IGNORE INTO sent (key, ord, what) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, order, what],
            )
            .unwrap();
        self.step_ended(row);
        key
    }
}

impl parcel::Steps for Shop {
    async fn boxed(
        &self,
        p: parcel::Machine<parcel::Boxed>,
        cx: Context,
    ) -> Result<parcel::Machine<parcel::Weighed>, StepError> {
        let row = self.step_started(&cx, "Boxed");
        self.work(p.order, p.n).await;
        self.step_ended(row);
        Ok(p.weigh(|b| parcel::Weighed {
            order: b.order,
            n: b.n,
            grams: 100 * (b.n + 1),
        }))
    }

    async fn weighed(
        &self,
        p: parcel::Machine<parcel::Weighed>,
        cx: Context,
    ) -> Result<parcel::Machine<parcel::Labelled>, StepError> {
        let label = self.send(&cx, "Weighed", p.order, "label").await;
        Ok(p.label(|w| parcel::Labelled {
            order: w.order,
            n: w.n,
            label,
        }))
    }
}

impl notice::Steps for Shop {
    async fn queued(
        &self,
        n: notice::Machine<notice::Queued>,
        cx: Context,
    ) -> Result<notice::Machine<notice::Delivered>, StepError> {
        let key = self.send(&cx, "Queued", n.order, &n.to).await;
        Ok(n.send(|q| notice::Delivered {
            order: q.order,
            key,
        }))
    }
}

impl checkout::Steps for Shop {
    async fn placed(
        &self,
        o: checkout::Machine<checkout::Placed>,
        cx: Context,
    ) -> Result<checkout::Machine<checkout::Packing>, StepError> {
        let row = self.step_started(&cx, "Placed");
        self.work(o.order, 1).await;
        self.step_ended(row);
        Ok(o.reserve(|p| checkout::Packing { order: p.order }))
    }

    async fn packing(
        &self,
        o: &checkout::Machine<checkout::Packing>,
        _: Context,
    ) -> Result<Vec<Parcel>, StepError> {
        let parcel = |n| parcel::Machine::new(parcel::Boxed { order: o.order, n }).into();
        Ok((0..3).map(parcel).collect())
    }

    fn join_packing(
        &self,
        o: checkout::Machine<checkout::Packing>,
        parcels: Vec<fsm_core::Ended<Parcel>>,
    ) -> checkout::Machine<checkout::Notifying> {
        let labels = parcels
            .into_iter()
            .map(|p| match p.into_state() {
                Parcel::Labelled { label, .. } => label,
                other => panic!("a parcel ended in {other:?}"),
            })
            .collect();
        o.pack(|p| checkout::Notifying {
            order: p.order,
            labels,
        })
    }

    async fn notifying(
        &self,
        o: &checkout::Machine<checkout::Notifying>,
        _: Context,
    ) -> Result<(Notice, Notice), StepError> {
        let to = |to: &str| {
            let to = to.to_owned();
            notice::Machine::new(notice::Queued { order: o.order, to }).into()
        };
        Ok((to("customer"), to("warehouse")))
    }

    fn join_notifying(
        &self,
        o: checkout::Machine<checkout::Notifying>,
        customer: fsm_core::Ended<Notice>,
        warehouse: fsm_core::Ended<Notice>,
    ) -> checkout::Machine<checkout::Reserved> {
        let key = |n: fsm_core::Ended<Notice>| match n.into_state() {
            Notice::Delivered { key, .. } => key,
            other => panic!("a notice ended in {other:?}"),
        };
        let notices = vec![key(customer), key(warehouse)];
        o.notify(|n| checkout::Reserved {
            order: n.order,
            sent: Sent {
                labels: n.labels,
                notices,
            },
        })
    }

    async fn reserved(
        &self,
        o: checkout::Machine<checkout::Reserved>,
        cx: Context,
    ) -> Result<checkout::Machine<checkout::Paid>, StepError> {
        let row = self.step_started(&cx, "Reserved");
        self.work(o.order, cx.attempt).await;
        // Every fifth order's gateway is down on the first attempt: its retry is a durable
        // timer, 1.2 s away, that outlives the process.
        if o.order.is_multiple_of(5) && cx.attempt == 1 {
            self.step_ended(row);
            return Err(StepError::retryable("gateway_unavailable", "503"));
        }
        let key = cx.idempotency_key().to_string();
        {
            let conn = self.ledger.lock().unwrap();
            conn.execute(
                "INSERT INTO charge_calls (key, pid) VALUES (?1, ?2)",
                rusqlite::params![key, self.pid],
            )
            .unwrap();
            conn.execute(
                "INSERT OR IGNORE INTO charges (key, ord, pid) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, o.order, self.pid],
            )
            .unwrap();
        }
        self.work(o.order, 7).await;
        self.step_ended(row);
        Ok(o.charge(|r| checkout::Paid {
            order: r.order,
            payment: key,
            sent: r.sent,
        }))
    }

    async fn paid(
        &self,
        o: checkout::Machine<checkout::Paid>,
        cx: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        let row = self.step_started(&cx, "Paid");
        self.ledger
            .lock()
            .unwrap()
            .execute(
                "INSERT OR IGNORE INTO carrier (token, ord) VALUES (?1, ?2)",
                rusqlite::params![token.to_string(), o.order],
            )
            .unwrap();
        self.step_ended(row);
        Ok(())
    }
}

/// Where the executions live: the SQLite file in the test's directory, or a PostgreSQL
/// database.
#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

fn child(dir: &Path, backend: &Backend, lease: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match backend {
            Backend::Sqlite => {
                // The previous child may still be dying: its lock goes with it.
                let store = loop {
                    match SqliteStore::open(dir.join("orders.db")) {
                        Ok(store) => break store,
                        Err(StoreError::Locked { .. }) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                };
                work(dir, store, 12).await;
            }
            Backend::Postgres(url) => {
                let store = PgStore::connect_with_lease(url, lease).await.unwrap();
                work(dir, store, 8).await;
            }
        }
    });
}

/// A worker: runs executions until none is running or waiting, and plays the carrier.
async fn work<S: Store>(dir: &Path, store: S, in_flight: usize) {
    let shop = Shop {
        ledger: Mutex::new(ledger(dir)),
        pid: std::process::id(),
    };
    let mut options = DurableOptions::default();
    options.max_in_flight = in_flight;
    let ex = Executor::<Checkout, Shop>::builder(shop)
        .durable_with(store, options)
        .unwrap();
    loop {
        // The carrier delivers what it was given, once it is given it.
        let tokens: Vec<String> = {
            let conn = ex.steps().ledger.lock().unwrap();
            let mut stmt = conn
                .prepare("SELECT token FROM carrier WHERE done = 0")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        for token in tokens {
            let answer = ex
                .complete::<checkout::Paid, _>(&token, |o| {
                    o.deliver(|p| checkout::Delivered {
                        order: p.order,
                        payment: p.payment,
                        sent: p.sent,
                    })
                })
                .await;
            match answer {
                // Another worker answered it first: as good.
                Ok(_) | Err(fsm_core::TokenError::AlreadyUsed) => {
                    ex.steps()
                        .ledger
                        .lock()
                        .unwrap()
                        .execute("UPDATE carrier SET done = 1 WHERE token = ?1", [&token])
                        .unwrap();
                }
                // The database is away: the carrier tries again.
                Err(fsm_core::TokenError::Unavailable(_)) => {}
                Err(e) => panic!("the carrier's token was refused: {e}"),
            }
        }
        // One read: two (running, then waiting) could miss an execution that moved from
        // waiting to running between them.
        let rows = ex
            .list(fsm_core::ListQuery::new().limit(0))
            .await
            .map(|page| page.executions);
        // Only the database being away is a problem this worker may meet, and it is the
        // store's, not an execution's.
        for problem in ex.problems() {
            assert!(
                problem.execution.is_none()
                    && matches!(
                        problem.error,
                        DurableError::Store(StoreError::Unavailable { .. })
                    ),
                "{problem:?}"
            );
        }
        match rows {
            Ok(rows) if rows.iter().all(|r| r.status.is_final()) => break,
            Ok(_) | Err(DurableError::Store(StoreError::Unavailable { .. })) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many executions have ended, and how many are running or waiting, on a connection of
/// its own.
async fn progress(url: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status NOT IN ('running', 'waiting')), \
             count(*) FILTER (WHERE status IN ('running', 'waiting')) FROM fsm_executions",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A small seeded generator (xorshift), for the kill times.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn spawn_child(dir: &Path, backend: &Backend, disruption: &Disruption) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg("--child").arg(dir);
    if let Backend::Postgres(url) = backend {
        // Under kills, a lease well beyond a step and a checkpoint on this loaded machine, so
        // that no live worker's lease runs out (a killed worker's executions wait for it);
        // under restarts, the default lease, longer than the server is away: an execution a
        // worker dropped when its commit could not be confirmed must not stay leased.
        let lease = match disruption {
            Disruption::Kills => 4_000,
            Disruption::Restarts(_) => 10_000,
        };
        command.arg(url).arg(lease.to_string());
    }
    command.spawn().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let backend = match args.get(3) {
            Some(url) => Backend::Postgres(url.clone()),
            None => Backend::Sqlite,
        };
        let lease = args.get(4).and_then(|ms| ms.parse().ok()).unwrap_or(10_000);
        child(Path::new(&args[2]), &backend, Duration::from_millis(lease));
        return;
    }
    let seed: u64 = std::env::var("FSM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() as u64 % 1_000_000);
    println!("crash test: seed {seed} (FSM_CRASH_SEED={seed} cargo test --test crash repeats it)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenario(seed, Backend::Sqlite, 200, 1, Disruption::Kills));
    let Ok(url) = std::env::var("DATABASE_URL") else {
        skipped(
            "crash and restart tests on PostgreSQL (4 workers)",
            "DATABASE_URL is not set (.ci/run starts a server)",
        );
        return;
    };
    let db = rt.block_on(postgres::fresh_database(&url, "crash"));
    rt.block_on(scenario(
        seed,
        Backend::Postgres(db),
        1_000,
        4,
        Disruption::Kills,
    ));
    let Ok(pg_ctl) = std::env::var("FSM_PG_CTL") else {
        skipped(
            "database restart test on PostgreSQL",
            "FSM_PG_CTL (the pg_ctl command of the server of DATABASE_URL, with its -D) \
             is not set (.ci/run sets it)",
        );
        return;
    };
    let db = rt.block_on(postgres::fresh_database(&url, "restart"));
    rt.block_on(scenario(
        seed,
        Backend::Postgres(db),
        1_000,
        4,
        Disruption::Restarts(pg_ctl),
    ));
}

/// Says that a test was skipped, in a line CI prints; fails where the server is required.
fn skipped(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
    println!("{line}");
}

/// Checks branch `position` of the fan-out at `step` of `parent`: stored, linked to its
/// parent, succeeded in `end`, its history a path of its machine; and that the key its join
/// received is its step `key_step`'s, which did its work once, for `order`.
/// Returns how many times it was resumed.
async fn checked<M>(
    client: &DurableClient<M, AnyStore>,
    (parent, step, position): (fsm_core::ExecutionId, u32, u32),
    (key, key_step): (&str, u32),
    end: &str,
    (sent, order): (&HashMap<String, u32>, u32),
) -> usize
where
    M: Fsm + Serialize + serde::de::DeserializeOwned,
{
    let id = parent.branch(step, position);
    let row = client.get(id).await.unwrap();
    assert_eq!(
        (row.status, row.parent, row.state_name.as_str()),
        (ExecutionStatus::Succeeded, Some(parent), end)
    );
    assert_eq!(
        key,
        format!("{id}-step-{key_step}"),
        "branch {position} of {parent}"
    );
    assert_eq!(sent.get(key), Some(&order));
    let history = client.history(id).await.unwrap();
    path_of(M::DEFINITION, &history, &row.state_name)
}

/// Checks that `history` is a path of `def` from its initial state to `end`; returns how
/// many times it was resumed.
fn path_of(def: &fsm_core::Definition, history: &fsm_core::History, end: &str) -> usize {
    let events = history.events();
    assert!(
        matches!(events[0].kind, EventKind::ExecutionStarted { state } if state == def.initial_state().name)
    );
    let mut at = def.initial_state().name;
    let mut resumed = 0;
    for e in events {
        match e.kind {
            EventKind::Transition {
                from, to, index, ..
            } => {
                assert_eq!(from, at, "{history}");
                let t = &def.transitions[index];
                assert_eq!((def.states[t.from].name, def.states[t.to].name), (from, to));
                at = to;
            }
            EventKind::ExecutionResumed { .. } => resumed += 1,
            _ => assert_eq!(e.kind.state(), at, "{history}"),
        }
    }
    assert_eq!(at, end);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::ExecutionSucceeded { .. }
    ));
    resumed
}

/// What happens to the workers while they work.
enum Disruption {
    /// One worker at a time is SIGKILLed, at least `MIN_KILLS` times, and restarted.
    Kills,
    /// The database server is restarted (`pg_ctl restart`, given the command up to the
    /// action) three times, once in `immediate` mode (as after a crash of the server); the
    /// workers live on.
    Restarts(String),
}

async fn store_of(dir: &Path, backend: &Backend) -> AnyStore {
    match backend {
        Backend::Sqlite => AnyStore::Sqlite(SqliteStore::open(dir.join("orders.db")).unwrap()),
        Backend::Postgres(url) => AnyStore::Postgres(PgStore::connect(url).await.unwrap()),
    }
}

/// `orders` checkouts on `workers` worker processes, disrupted; then the checks.
async fn scenario(
    seed: u64,
    backend: Backend,
    orders: u32,
    workers: usize,
    disruption: Disruption,
) {
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    let test = match disruption {
        Disruption::Kills => "crash",
        Disruption::Restarts(_) => "restart",
    };
    let began = Instant::now();
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "fsm-{test}-{}-{}",
        std::process::id(),
        name.to_lowercase()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    drop(ledger(&dir));

    // The orders are started durably up front by a client that runs nothing, so each is
    // started exactly once.
    let ids = {
        let ex = DurableClient::<Checkout, _>::new(store_of(&dir, &backend).await);
        let mut ids = HashMap::new();
        for order in 0..orders {
            let id = ex
                .start(checkout::Machine::new(checkout::Placed { order }))
                .await
                .unwrap();
            ids.insert(id, order);
        }
        ids
    };

    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // When each child was killed, by pid.
    let mut killed: HashMap<u32, i64> = HashMap::new();
    let mut kills = 0;
    let mut children: Vec<Child> = (0..workers)
        .map(|_| spawn_child(&dir, &backend, &disruption))
        .collect();
    let mut spawned = workers;
    let mut what = String::new();
    match (&disruption, &backend) {
        (Disruption::Kills, _) => {
            while kills < MIN_KILLS {
                tokio::time::sleep(Duration::from_millis(20 + rng.below(150))).await;
                let i = rng.below(workers as u64) as usize;
                if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
                    break;
                }
                if children[i].try_wait().unwrap().is_none() {
                    children[i].kill().unwrap();
                    killed.insert(children[i].id(), now_ns());
                    children[i].wait().unwrap();
                    kills += 1;
                    children[i] = spawn_child(&dir, &backend, &disruption);
                    spawned += 1;
                }
            }
            assert!(
                kills >= MIN_KILLS,
                "{name}: the work ended after {kills} kills; the test needs {MIN_KILLS}"
            );
            what = format!("{kills} kills, {spawned} processes");
        }
        (Disruption::Restarts(pg_ctl), Backend::Postgres(url)) => {
            // Each restart once a seeded share of the work has ended: mid-run.
            for (i, mode) in ["fast", "immediate", "fast"].into_iter().enumerate() {
                let due = i64::from(orders) * (15 + 20 * i as i64 + rng.below(10) as i64) / 100;
                let (ended, open) = loop {
                    let (ended, open) = progress(url).await;
                    assert!(
                        children.iter_mut().all(|c| c.try_wait().unwrap().is_none()),
                        "a worker ended before the server was restarted"
                    );
                    if ended >= due {
                        break (ended, open);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert!(open > 0, "the work ended before the server was restarted");
                let restarted = Instant::now();
                let status = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{pg_ctl} -w -m {mode} restart >/dev/null"))
                    .status()
                    .unwrap();
                assert!(status.success(), "{pg_ctl} restart: {status}");
                what += &format!(
                    "{}restarted ({mode}) with {ended} ended and {open} open in {:.1} s",
                    if what.is_empty() { "" } else { ", " },
                    restarted.elapsed().as_secs_f64()
                );
            }
        }
        (Disruption::Restarts(_), Backend::Sqlite) => unreachable!("SQLite has no server"),
    }
    // The workers end when every execution has; one that is stuck fails the test.
    let deadline = Instant::now() + Duration::from_secs(300);
    for i in 0..children.len() {
        let status = loop {
            if let Some(status) = children[i].try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                children.iter_mut().for_each(|c| drop(c.kill()));
                panic!("{name}: the work did not end within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "a worker failed: {status}");
    }

    // What the store says.
    let (rows, histories) = {
        let ex = DurableClient::<Checkout, _>::new(store_of(&dir, &backend).await);
        let listed = ex.list(fsm_core::ListQuery::new().limit(0)).await.unwrap();
        let (mut rows, mut histories) = (Vec::new(), Vec::new());
        for summary in &listed.executions {
            rows.push(ex.get(summary.id).await.unwrap());
            histories.push(ex.history(summary.id).await.unwrap());
        }
        (rows, histories)
    };

    // Every execution ended, and none was lost or added.
    assert_eq!(rows.len(), orders as usize);
    let stored: HashSet<_> = rows.iter().map(|r| r.id).collect();
    assert_eq!(stored, ids.keys().copied().collect());
    for row in &rows {
        assert_eq!(row.status, ExecutionStatus::Succeeded, "{row:?}");
        assert_eq!(row.state_name, "Delivered");
    }

    // Each order charged exactly once, with the key its execution holds.
    let ledger = ledger(&dir);
    let mut charged: HashMap<u32, Vec<String>> = HashMap::new();
    let mut stmt = ledger.prepare("SELECT key, ord FROM charges").unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
        .unwrap()
    {
        let (key, order) = row.unwrap();
        charged.entry(order).or_default().push(key);
    }
    let calls: i64 = ledger
        .query_row("SELECT count(*) FROM charge_calls", [], |r| r.get(0))
        .unwrap();
    for row in &rows {
        let order = ids[&row.id];
        let keys = charged.get(&order).cloned().unwrap_or_default();
        assert_eq!(keys.len(), 1, "order {order} charged {keys:?}");
        assert!(
            row.state.contains(&keys[0]),
            "{} holds {}",
            row.state,
            keys[0]
        );
        assert_eq!(keys[0], format!("{}-step-3", row.id));
    }

    // Every stored history is a path of the definition, from the initial state to where the
    // execution is.
    let mut resumed = 0;
    for (row, history) in rows.iter().zip(&histories) {
        resumed += path_of(Checkout::DEFINITION, history, &row.state_name);
    }

    // Every order's branches: stored, linked to it, with the ids derived from it (its step 1
    // the Map's, its step 2 the Parallel state's), ended where their machines end; their
    // work done once per key, and what the joins received is what they did.
    let store = store_of(&dir, &backend).await;
    let parcels = DurableClient::<Parcel, _>::new(store.clone());
    let notices = DurableClient::<Notice, _>::new(store.clone());
    let mut sent: HashMap<String, u32> = HashMap::new();
    let mut stmt = ledger.prepare("SELECT key, ord FROM sent").unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
        .unwrap()
    {
        let (key, order) = row.unwrap();
        sent.insert(key, order);
    }
    let mut branches_resumed = 0;
    for row in &rows {
        let order = ids[&row.id];
        let listed = store
            .list(fsm_core::ListQuery::new().parent(row.id).limit(0))
            .await
            .unwrap();
        let children: HashSet<_> = listed.executions.iter().map(|e| e.id).collect();
        let expected: HashSet<_> = (0..3)
            .map(|p| row.id.branch(1, p))
            .chain((0..2).map(|p| row.id.branch(2, p)))
            .collect();
        assert_eq!(children, expected, "order {order}'s branches");
        let Checkout::Delivered { sent: joined, .. } = serde_json::from_str(&row.state).unwrap()
        else {
            panic!("order {order} is not delivered: {}", row.state);
        };
        for (p, label) in joined.labels.iter().enumerate() {
            let branch = (row.id, 1, p as u32);
            let sent = (&sent, order);
            branches_resumed += checked(&parcels, branch, (label, 1), "Labelled", sent).await;
        }
        for (p, key) in joined.notices.iter().enumerate() {
            let branch = (row.id, 2, p as u32);
            let sent = (&sent, order);
            branches_resumed += checked(&notices, branch, (key, 0), "Delivered", sent).await;
        }
    }
    // Nothing was sent that no join received.
    assert_eq!(sent.len(), rows.len() * 5);
    if matches!(disruption, Disruption::Kills) {
        assert!(
            branches_resumed > 0,
            "{name}: no branch was resumed after {kills} kills"
        );
    }

    // No execution ran steps in two processes at once: a step of a killed process lasts
    // until the kill.
    let mut runs: HashMap<String, Vec<(u32, i64, i64)>> = HashMap::new();
    let mut stmt = ledger
        .prepare("SELECT execution, pid, started, ended FROM steps")
        .unwrap();
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .unwrap()
    {
        let (execution, pid, started, ended) = row.unwrap();
        let ended = ended
            .or_else(|| killed.get(&pid).copied())
            .unwrap_or(i64::MAX);
        runs.entry(execution)
            .or_default()
            .push((pid, started, ended));
    }
    let mut steps = 0;
    for (execution, mut spans) in runs {
        spans.sort_by_key(|s| s.1);
        steps += spans.len();
        for pair in spans.windows(2) {
            let ((pa, _, ea), (pb, sb, _)) = (pair[0], pair[1]);
            assert!(
                pa == pb || ea <= sb,
                "execution {execution} ran in processes {pa} and {pb} at once"
            );
        }
    }
    println!(
        "{test} test on {name}: {orders} checkouts, {workers} worker(s), {what}, {steps} steps run \
         ({calls} charge calls, {} charges), {resumed} resumptions of orders and \
         {branches_resumed} of their branches, {:.1} s",
        charged.values().map(Vec::len).sum::<usize>(),
        began.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
