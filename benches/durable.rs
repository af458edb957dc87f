//! Durable executions on SQLite: checkpointed transitions per second, the latency of one
//! durable transition, and the memory that waiting executions hold.
//!
//! - `throughput_1000`: 1,000 executions of a 20-step chain started one after another (each
//!   start awaited: it returns once the execution is committed) on a two-worker runtime,
//!   each transition checkpointed (the execution's row, three history events) before the
//!   next step; divan's items/s are transitions per second. `process` is the default
//!   durability (a commit survives a killed process), `power_loss` the strictest (every
//!   commit waits for the disk). `throughput_1000_process_started_at_once` starts the 1,000
//!   together, as a service whose requests arrive together does.
//! - `one_execution`: one execution of the 20-step chain alone; divide by 20 for one durable
//!   transition. Medians; the p99 of single transitions is printed after the divan table.
//! - After the table: the resident memory of 100,000 executions waiting for task tokens, out
//!   of memory, against the process before they started.
//! - `throughput_1000_process_beside_100k` and `..._with_monitor`: the first bench on a file
//!   that also holds 100,000 other executions (ended, failed, waiting, due), without and with
//!   a monitor evaluating every rule once a second (ten times its default) in the same
//!   process: what the monitor costs checkpoints.
//! - The `ops` report: one monitor evaluation over those 100,000 executions, and a redrive and
//!   a cancel from the call to the committed change (p50, p99), on SQLite and (with
//!   `DATABASE_URL`) PostgreSQL.
//!
//! `cargo bench --bench durable`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fsm_core::{
    Context, Durability, DurableExecutor, Executor, Fsm, SqliteOptions, SqliteStore, StepError,
    TaskToken,
};
use serde::{Deserialize, Serialize};

#[derive(Fsm, Clone, Serialize, Deserialize)]
pub enum Chain {
    #[fsm(initial, on(t0 => S1))]
    S0(u64),
    #[fsm(on(t1 => S2))]
    S1(u64),
    #[fsm(on(t2 => S3))]
    S2(u64),
    #[fsm(on(t3 => S4))]
    S3(u64),
    #[fsm(on(t4 => S5))]
    S4(u64),
    #[fsm(on(t5 => S6))]
    S5(u64),
    #[fsm(on(t6 => S7))]
    S6(u64),
    #[fsm(on(t7 => S8))]
    S7(u64),
    #[fsm(on(t8 => S9))]
    S8(u64),
    #[fsm(on(t9 => S10))]
    S9(u64),
    #[fsm(on(t10 => S11))]
    S10(u64),
    #[fsm(on(t11 => S12))]
    S11(u64),
    #[fsm(on(t12 => S13))]
    S12(u64),
    #[fsm(on(t13 => S14))]
    S13(u64),
    #[fsm(on(t14 => S15))]
    S14(u64),
    #[fsm(on(t15 => S16))]
    S15(u64),
    #[fsm(on(t16 => S17))]
    S16(u64),
    #[fsm(on(t17 => S18))]
    S17(u64),
    #[fsm(on(t18 => S19))]
    S18(u64),
    #[fsm(on(t19 => S20))]
    S19(u64),
    #[fsm(terminal)]
    S20(u64),
}

pub struct Bump;

macro_rules! steps {
    ($($name:ident: $from:ident -> $event:ident -> $to:ident),* $(,)?) => {
        impl chain::Steps for Bump {
            $(
                async fn $name(
                    &self,
                    s: chain::Machine<chain::$from>,
                    _: Context,
                ) -> Result<chain::Machine<chain::$to>, StepError> {
                    Ok(s.$event(|chain::$from(x)| chain::$to(x + 1)))
                }
            )*
        }
    };
}

steps! {
    s0: S0 -> t0 -> S1, s1: S1 -> t1 -> S2, s2: S2 -> t2 -> S3, s3: S3 -> t3 -> S4,
    s4: S4 -> t4 -> S5, s5: S5 -> t5 -> S6, s6: S6 -> t6 -> S7, s7: S7 -> t7 -> S8,
    s8: S8 -> t8 -> S9, s9: S9 -> t9 -> S10, s10: S10 -> t10 -> S11, s11: S11 -> t11 -> S12,
    s12: S12 -> t12 -> S13, s13: S13 -> t13 -> S14, s14: S14 -> t14 -> S15,
    s15: S15 -> t15 -> S16, s16: S16 -> t16 -> S17, s17: S17 -> t17 -> S18,
    s18: S18 -> t18 -> S19, s19: S19 -> t19 -> S20,
}

const STEPS: u64 = 20;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fsm-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("bench.db")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn executor(
    rt: &tokio::runtime::Runtime,
    name: &str,
    durability: Durability,
) -> DurableExecutor<Chain, Bump, SqliteStore> {
    let options = SqliteOptions {
        durability,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(temp_db(name), options).unwrap();
    let _guard = rt.enter();
    Executor::<Chain, Bump>::builder(Bump)
        .durable(store)
        .unwrap()
}

fn throughput(bencher: divan::Bencher, durability: Durability, name: &str) {
    let rt = runtime();
    let ex = executor(&rt, name, durability);
    thousand_chains(bencher, &rt, &ex);
}

/// Times 1,000 chains started one after another on `ex`, until all have ended; items are
/// transitions.
fn thousand_chains(
    bencher: divan::Bencher,
    rt: &tokio::runtime::Runtime,
    ex: &DurableExecutor<Chain, Bump, SqliteStore>,
) {
    bencher
        .counter(divan::counter::ItemsCount::new(1_000 * STEPS))
        .bench_local(|| {
            rt.block_on(async {
                for _ in 0..1_000 {
                    ex.start(Chain::S0(0)).await.unwrap();
                }
                ex.idle().await;
            })
        });
}

/// `throughput_1000_process` with the 1,000 chains started at once (as a service does, its
/// requests arriving together) rather than one after another: each start waits for its
/// commit, so one after another, at most one start is in flight and the chains under way
/// are those started within the last chain's time.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn throughput_1000_process_started_at_once(bencher: divan::Bencher) {
    let rt = runtime();
    let ex = executor(&rt, "process-at-once", Durability::Process);
    bencher
        .counter(divan::counter::ItemsCount::new(1_000 * STEPS))
        .bench_local(|| {
            rt.block_on(async {
                let mut starts = tokio::task::JoinSet::new();
                for _ in 0..1_000 {
                    let ex = ex.clone();
                    starts.spawn(async move { ex.start(Chain::S0(0)).await.unwrap() });
                }
                starts.join_all().await;
                ex.idle().await;
            })
        });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn throughput_1000_process(bencher: divan::Bencher) {
    throughput(bencher, Durability::Process, "process");
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn throughput_1000_power_loss(bencher: divan::Bencher) {
    throughput(bencher, Durability::PowerLoss, "power-loss");
}

/// A file with 100,000 executions of other machines beside the bench's, made once.
fn beside_100k() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let path = temp_db("beside-100k");
        let rt = runtime();
        rt.block_on(async {
            let store = SqliteStore::open(&path).unwrap();
            populate(&store, 100_000, 0).await;
        });
        path
    })
    .clone()
}

/// Writes `n` executions of machines `Other` and `Due` straight into `store`, as workers
/// would have left them: 90% succeeded, 4% errored, 1% failed, 4% waiting for a token (the
/// oldest for an hour), 1% due and claimed by no worker; the most recent `recent_ms` old
/// or less, the oldest a day old.
async fn populate<S: fsm_core::Store + Clone>(
    store: &S,
    n: u64,
    errored_waiting: u64,
) -> Vec<fsm_core::ExecutionId> {
    use fsm_core::store::NewExecution;
    use fsm_core::{ExecutionRecord, ExecutionStatus, WaitingFor};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut kept = Vec::new();
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..n + errored_waiting {
        let (status, waiting_for, machine) = match i {
            i if i >= n => (
                if (i - n).is_multiple_of(2) {
                    ExecutionStatus::Errored
                } else {
                    ExecutionStatus::Waiting
                },
                ((i - n) % 2 == 1).then_some(WaitingFor::Token),
                "Kept",
            ),
            i if i % 100 < 90 => (ExecutionStatus::Succeeded, None, "Other"),
            i if i % 100 < 94 => (ExecutionStatus::Errored, None, "Other"),
            i if i % 100 < 95 => (ExecutionStatus::Failed, None, "Other"),
            i if i % 100 < 99 => (ExecutionStatus::Waiting, Some(WaitingFor::Token), "Other"),
            _ => (ExecutionStatus::Running, None, "Due"),
        };
        let at = now - (i % 86_400) * 1000;
        let id = fsm_core::ExecutionId::from_u128(
            (u128::from(at) << 80) | 0x7000_8000_0000_0000_0000 | u128::from(i),
        );
        if machine == "Kept" {
            kept.push(id);
        }
        let record = ExecutionRecord {
            id,
            name: None,
            machine: machine.into(),
            fingerprint: "0".into(),
            state_name: "S3".into(),
            state: "{\"S3\":3}".into(),
            status,
            waiting_for,
            step: 3,
            attempt: 1,
            entered_at: at,
            due_at: (!status.is_final()).then_some(at),
            error: (status == ExecutionStatus::Errored).then(|| "gateway: down".into()),
            events: 1,
            created_at: at,
            updated_at: at,
            lease_owner: None,
            lease_expires: None,
            version: 1,
            claims: 0,
            parent: None,
        };
        let store = store.clone();
        batch.spawn(async move {
            store
                .create(NewExecution {
                    record,
                    events: Vec::new(),
                    token: None,
                })
                .await
                .unwrap();
        });
        if batch.len() >= 2_000 {
            batch.join_all().await;
            batch = tokio::task::JoinSet::new();
        }
    }
    batch.join_all().await;
    kept
}

/// Every rule the monitor has.
fn monitor<S: fsm_core::Store>(store: S) -> fsm_core::Monitor<S> {
    use fsm_core::Rule;
    fsm_core::Monitor::new(store)
        .rule(Rule::FailureRate {
            above: 0.05,
            window: Duration::from_secs(300),
            at_least: 20,
        })
        .rule(Rule::OpenLongerThan(Duration::from_secs(3_600)))
        .rule(Rule::StepLongerThan(Duration::from_secs(600)))
        .rule(Rule::WaitLongerThan(Duration::from_secs(3_600)))
        .rule(Rule::BacklogOlderThan(Duration::from_secs(60)))
        .rule(Rule::LeaseExpiredFor(Duration::from_secs(60)))
}

fn throughput_beside_100k(bencher: divan::Bencher, with_monitor: bool) {
    let path = beside_100k();
    let rt = runtime();
    let store = SqliteStore::open(&path).unwrap();
    let ex = {
        let _guard = rt.enter();
        Executor::<Chain, Bump>::builder(Bump)
            .durable(store)
            .unwrap()
    };
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    if with_monitor {
        // On a read-only store of its own, as a deployment gives it: its questions are read
        // on a connection of their own, never queued behind the worker's writes.
        let read_only = SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, read_only).unwrap();
        let monitor = monitor(store).every(Duration::from_secs(1));
        let stop = std::sync::Arc::clone(&stop);
        rt.spawn(monitor.run(async move { stop.notified().await }));
    }
    thousand_chains(bencher, &rt, &ex);
    stop.notify_one();
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn throughput_1000_process_beside_100k(bencher: divan::Bencher) {
    throughput_beside_100k(bencher, false);
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn throughput_1000_process_beside_100k_with_monitor(bencher: divan::Bencher) {
    throughput_beside_100k(bencher, true);
}

/// The p50 and p99 of `times`, sorted here.
fn p50_p99(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.5), p(0.99))
}

/// One monitor evaluation over 100,000 executions, and redrives and cancels from the call to
/// the committed change, on `store` (`name` says which).
async fn ops_report<S: fsm_core::Store + Clone>(name: &str, store: S) {
    let kept = populate(&store, 100_000, 2_000).await;
    let mut monitor = monitor(store.clone());
    let mut evaluations = Vec::new();
    for _ in 0..20 {
        let began = Instant::now();
        monitor.evaluate().await;
        evaluations.push(began.elapsed());
    }
    let (e50, e99) = p50_p99(&mut evaluations);
    let ops = fsm_core::Operator::new(store, "bench");
    let (mut redrives, mut cancels) = (Vec::new(), Vec::new());
    for (i, id) in kept.iter().enumerate() {
        let began = Instant::now();
        if i % 2 == 0 {
            ops.redrive(*id).await.unwrap();
            redrives.push(began.elapsed());
        } else {
            ops.cancel(*id).await.unwrap();
            cancels.push(began.elapsed());
        }
    }
    let (r50, r99) = p50_p99(&mut redrives);
    let (c50, c99) = p50_p99(&mut cancels);
    println!(
        "{name}: one monitor evaluation (6 rules) over 102,000 executions: p50 {e50:?}, p99 {e99:?} \
         (20); redrive: p50 {r50:?}, p99 {r99:?}; cancel: p50 {c50:?}, p99 {c99:?} (1,000 each)"
    );
}

#[divan::bench(sample_count = 200, sample_size = 1)]
fn one_execution(bencher: divan::Bencher) {
    let rt = runtime();
    let ex = executor(&rt, "one", Durability::Process);
    bencher.bench_local(|| {
        rt.block_on(async {
            ex.start(Chain::S0(0)).await.unwrap();
            ex.idle().await;
        })
    });
}

/// Single durable transitions, timed from the observer: the p50 and p99 of the time between
/// one transition and the next of one execution alone.
fn latency_report() {
    let rt = runtime();
    let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(40_000)));
    let store = SqliteStore::open(temp_db("latency")).unwrap();
    let seen = times.clone();
    let last = std::sync::Mutex::new(None::<Instant>);
    let ex = {
        let _guard = rt.enter();
        Executor::<Chain, Bump>::builder(Bump)
            .observer(move |_, e| {
                if let fsm_core::EventKind::Transition { from, .. } = e.kind {
                    let now = Instant::now();
                    let mut last = last.lock().unwrap();
                    if from != "S0" {
                        if let Some(before) = *last {
                            seen.lock().unwrap().push(now - before);
                        }
                    }
                    *last = Some(now);
                }
            })
            .durable(store)
            .unwrap()
    };
    rt.block_on(async {
        for _ in 0..1_000 {
            ex.start(Chain::S0(0)).await.unwrap();
            ex.idle().await;
        }
    });
    let mut t = times.lock().unwrap().clone();
    t.sort();
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    println!(
        "one durable transition (default durability, {} samples): p50 {:?}, p99 {:?}, max {:?}",
        t.len(),
        p(0.50),
        p(0.99),
        t[t.len() - 1]
    );
}

/// Resident memory, from /proc (Linux), in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

#[derive(Fsm, Clone, Serialize, Deserialize)]
pub enum Parcel {
    #[fsm(initial, wait, on(deliver => Delivered))]
    Shipped { order: u64 },
    #[fsm(terminal)]
    Delivered { order: u64 },
}

pub struct Carrier;

impl parcel::Steps for Carrier {
    async fn shipped(
        &self,
        _: parcel::Machine<parcel::Shipped>,
        _: Context,
        _: TaskToken,
    ) -> Result<(), StepError> {
        Ok(())
    }
}

fn memory_report() {
    const WAITING: u64 = 100_000;
    let rt = runtime();
    let path = temp_db("waiting");
    let store = SqliteStore::open(&path).unwrap();
    let ex = {
        let _guard = rt.enter();
        Executor::<Parcel, Carrier>::builder(Carrier)
            .durable(store)
            .unwrap()
    };
    // Warm up the allocator and the store with a few, then measure from there.
    rt.block_on(async {
        for order in 0..1_000 {
            ex.start(parcel::Machine::new(parcel::Shipped { order }))
                .await
                .unwrap();
        }
        ex.idle().await;
    });
    let start_many = |first: u64| {
        rt.block_on(async {
            let mut batch = Vec::new();
            for order in first..first + WAITING {
                let ex = ex.clone();
                batch.push(tokio::spawn(async move {
                    ex.start(parcel::Machine::new(parcel::Shipped { order }))
                        .await
                        .unwrap()
                }));
                if batch.len() == 1_000 {
                    for h in batch.drain(..) {
                        h.await.unwrap();
                    }
                }
            }
            for h in batch {
                h.await.unwrap();
            }
            ex.idle().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
    };
    let before = rss_mib();
    let started = Instant::now();
    start_many(1_000);
    let elapsed = started.elapsed();
    let after = rss_mib();
    // A second 100,000: memory that grows with the number waiting would grow again.
    start_many(1_000 + WAITING);
    let again = rss_mib();
    let waiting = rt
        .block_on(
            ex.list(
                fsm_core::ListQuery::new()
                    .status(fsm_core::ExecutionStatus::Waiting)
                    .limit(0),
            ),
        )
        .unwrap()
        .executions
        .len();
    let file = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1024.0 * 1024.0);
    println!(
        "{WAITING} executions started and left waiting for tokens in {:.1} s: RSS {before:.1} MiB \
         before, {after:.1} MiB after ({:+.1} MiB); {} waiting after another {WAITING}: \
         {again:.1} MiB ({:+.1} MiB); in flight: {}; database file {file:.1} MiB",
        elapsed.as_secs_f64(),
        after - before,
        waiting,
        again - after,
        ex.in_flight()
    );
}

#[path = "../tests/support/postgres.rs"]
mod postgres;
use postgres::fresh_database;

/// A worker process of the PostgreSQL report (`durable --pg-worker <url>`): runs the chain's
/// executions until its standard input closes.
fn pg_worker(url: &str) {
    let rt = runtime();
    rt.block_on(async {
        let store = fsm_core::PgStore::connect(url).await.unwrap();
        let ex = Executor::<Chain, Bump>::builder(Bump)
            .durable(store)
            .unwrap();
        println!("ready");
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
            .await
            .unwrap()
            .unwrap();
        ex.shutdown().await;
    });
}

/// CPU time (user and system) of a process, from `/proc` (in clock ticks of 10 ms).
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of every PostgreSQL server process on this machine.
fn postgres_cpu() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| cpu_of(&pid)).flatten()
        })
        .sum()
}

/// Runs `runs` times: 1,000 chains started together by `start`, timed until `open` says none is
/// left; returns transitions per second, sorted.
async fn timed_runs<F, O>(runs: usize, start: impl Fn() -> F, open: impl Fn() -> O) -> Vec<f64>
where
    F: std::future::Future<Output = ()> + Send + 'static,
    O: std::future::Future<Output = i64>,
{
    let mut rates = Vec::new();
    for _ in 0..runs {
        let began = Instant::now();
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..1_000 {
            starts.spawn(start());
        }
        starts.join_all().await;
        while open().await > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rates.push(1_000.0 * STEPS as f64 / began.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates
}

/// PostgreSQL: checkpointed transitions per second with 1, 2 and 4 worker processes (this
/// bench run again as `--pg-worker`), executions started by a client that is not a worker,
/// and where the CPU went; the same 1,000 chains on SQLite in this process; and the latency
/// from `start` to the first step, with idle workers.
fn postgres_report(url: &str) {
    let rt = runtime();
    for workers in [1usize, 2, 4] {
        let db = rt.block_on(fresh_database(url, &format!("bench_w{workers}")));
        let store = rt.block_on(fsm_core::PgStore::connect(&db)).unwrap();
        let client = fsm_core::DurableClient::<Chain, _>::new(store);
        let mut children: Vec<std::process::Child> = (0..workers)
            .map(|_| {
                let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                    .arg("--pg-worker")
                    .arg(&db)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut ready = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
                    &mut ready,
                )
                .unwrap();
                assert_eq!(ready.trim(), "ready");
                child
            })
            .collect();
        let (counter, conn) = rt
            .block_on(tokio_postgres::connect(&db, tokio_postgres::NoTls))
            .unwrap();
        rt.spawn(conn);
        let counter = std::sync::Arc::new(counter);
        let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
        let worker_cpu = || pids.iter().filter_map(|p| cpu_of(p)).sum::<Duration>();
        let cpu_before = (
            worker_cpu(),
            postgres_cpu(),
            cpu_of("self").unwrap_or_default(),
        );
        let rates = rt.block_on(timed_runs(
            3,
            || {
                let client = client.clone();
                async move {
                    client.start(Chain::S0(0)).await.unwrap();
                }
            },
            || {
                let counter = counter.clone();
                async move {
                    counter
                        .query_one(
                            "SELECT count(*) FROM fsm_executions WHERE status <> 'succeeded'",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0)
                }
            },
        ));
        let transitions = 3.0 * 1_000.0 * STEPS as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / transitions;
        let (w, p, c) = (
            per(worker_cpu() - cpu_before.0),
            per(postgres_cpu() - cpu_before.1),
            per(cpu_of("self").unwrap_or_default() - cpu_before.2),
        );
        println!(
            "PostgreSQL, {workers} worker process(es): 1,000 executions x 20 steps started by a \
             client: {:.0} checkpointed transitions/s (median of 3; {:.0}-{:.0}); CPU per \
             transition: workers {w:.1} us, PostgreSQL {p:.1} us, client {c:.1} us \
             ({:.2} cores busy at the median rate)",
            rates[1],
            rates[0],
            rates[2],
            (w + p + c) * rates[1] / 1e6
        );
        for child in &mut children {
            drop(child.stdin.take());
            child.wait().unwrap();
        }
    }
    // The same chains on SQLite, in one process (a SQLite file has one worker process).
    let ex = executor(&rt, "report", Durability::Process);
    let rates = rt.block_on(timed_runs(
        3,
        || {
            let ex = ex.clone();
            async move {
                ex.start(Chain::S0(0)).await.unwrap();
            }
        },
        || {
            let ex = ex.clone();
            async move { ex.in_flight() as i64 }
        },
    ));
    println!(
        "SQLite, the same run in one process: {:.0} checkpointed transitions/s (median of 3; \
         {:.0}-{:.0})",
        rates[1], rates[0], rates[2]
    );
    // Reads by a client: 20,000 `get`s from 64 tasks at once, on one store.
    let db = rt.block_on(fresh_database(url, "bench_reads"));
    let rates: Vec<f64> = rt.block_on(async {
        let store = fsm_core::PgStore::connect(&db).await.unwrap();
        let client = fsm_core::DurableClient::<Chain, _>::new(store);
        let id = client.start(Chain::S0(0)).await.unwrap();
        let mut rates = Vec::new();
        for _ in 0..3 {
            let began = Instant::now();
            let mut readers = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let client = client.clone();
                readers.spawn(async move {
                    for _ in 0..20_000 / 64 {
                        client.get(id).await.unwrap();
                    }
                });
            }
            readers.join_all().await;
            rates.push((20_000 / 64 * 64) as f64 / began.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        rates
    });
    println!(
        "PostgreSQL: a client's reads (get, 64 at once): {:.0} per second (median of 3; \
         {:.0}-{:.0})",
        rates[1], rates[0], rates[2]
    );
    // Latency from start to the first step, one execution at a time, idle workers.
    let db = rt.block_on(fresh_database(url, "bench_latency"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let first = seen.clone();
    let mut latencies = rt.block_on(async {
        let store = fsm_core::PgStore::connect(&db).await.unwrap();
        let _worker = Executor::<Chain, Bump>::builder(Bump)
            .observer(move |_, e| {
                if matches!(e.kind, fsm_core::EventKind::StepStarted { state: "S0", .. }) {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
            })
            .durable(store)
            .unwrap();
        let store = fsm_core::PgStore::connect(&db).await.unwrap();
        let client = fsm_core::DurableClient::<Chain, _>::new(store);
        let mut latencies = Vec::new();
        for _ in 0..200 {
            *seen.lock().unwrap() = None;
            let t = Instant::now();
            client.start(Chain::S0(0)).await.unwrap();
            loop {
                if let Some(at) = *seen.lock().unwrap() {
                    latencies.push(at - t);
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies
    });
    latencies.sort();
    println!(
        "PostgreSQL: start (by a client) to the first step on an idle worker: p50 {:?}, p99 {:?} (200 starts)",
        latencies[100],
        latencies[197]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--pg-worker") {
        pg_worker(&args[2]);
        return;
    }
    divan::main();
    if std::env::args().any(|a| a == "--bench") {
        // FSM_BENCH_REPORTS=postgres (say) prints only that report.
        let only = std::env::var("FSM_BENCH_REPORTS").unwrap_or_default();
        let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
        if wanted("latency") {
            latency_report();
        }
        if wanted("memory") {
            memory_report();
        }
        if wanted("ops") {
            let rt = runtime();
            let store = SqliteStore::open(temp_db("ops")).unwrap();
            rt.block_on(ops_report("SQLite", store));
            match std::env::var("DATABASE_URL") {
                Ok(url) => rt.block_on(async {
                    let db = fresh_database(&url, "bench_ops").await;
                    let store = fsm_core::PgStore::connect(&db).await.unwrap();
                    ops_report("PostgreSQL", store).await;
                }),
                Err(_) => println!("PostgreSQL ops figures skipped: DATABASE_URL is not set"),
            }
        }
        if !wanted("postgres") {
            return;
        }
        match std::env::var("DATABASE_URL") {
            Ok(url) => postgres_report(&url),
            Err(_) => println!("PostgreSQL figures skipped: DATABASE_URL is not set"),
        }
    }
}
