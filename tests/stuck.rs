//! The stuck test: a worker process (this binary, `stuck --child <store>`) runs an execution
//! whose step hangs past every limit with no timeout, and one that waits for a token nobody
//! answers. A monitor in this process reports each within its configured time, once, on a
//! SQLite file and on PostgreSQL; then the worker is SIGKILLed with its lease held, and on
//! PostgreSQL the monitor reports the lease that ran out, naming the execution.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fsm_core::store::Store;
use fsm_core::{
    Alert, Context, Executor, Fsm, Monitor, PgOptions, PgStore, Rule, Sink, SqliteOptions,
    SqliteStore, StepError, TaskToken,
};
use serde::{Deserialize, Serialize};

#[path = "support/postgres.rs"]
mod postgres;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Job {
    #[fsm(initial, on(start => Started))]
    Queued { id: u32 },
    #[fsm(wait, on(finish => Done))]
    Started { id: u32 },
    #[fsm(terminal)]
    Done { id: u32 },
}

struct Shop;

impl job::Steps for Shop {
    async fn queued(
        &self,
        j: job::Machine<job::Queued>,
        _: Context,
    ) -> Result<job::Machine<job::Started>, StepError> {
        if j.id == 1 {
            // Hangs past every limit: no timeout is declared.
            std::future::pending::<()>().await;
        }
        Ok(j.start(|s| job::Started { id: s.id }))
    }

    async fn started(
        &self,
        _: job::Machine<job::Started>,
        _: Context,
        _: TaskToken,
    ) -> Result<(), StepError> {
        // Nobody ever answers.
        Ok(())
    }
}

/// How long a step, a wait, an expired lease may last before it is reported, and how often
/// the monitor looks.
const LIMIT: Duration = Duration::from_millis(800);
const EVERY: Duration = Duration::from_millis(100);
/// How long a lease holds on PostgreSQL here.
const LEASE: Duration = Duration::from_millis(1000);

/// The child: a worker that starts the two jobs, says `ready <hanging> <waiting>`, and serves
/// until it is killed.
fn child(store: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        macro_rules! serve {
            ($store:expr) => {{
                let ex = Executor::<Job, Shop>::builder(Shop)
                    .durable($store)
                    .unwrap();
                let hanging = ex
                    .start(job::Machine::new(job::Queued { id: 1 }))
                    .await
                    .unwrap();
                let waiting = ex
                    .start(job::Machine::new(job::Queued { id: 2 }))
                    .await
                    .unwrap();
                while ex.get(waiting).await.unwrap().waiting_for.is_none() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                println!("ready {hanging} {waiting}");
                std::future::pending::<()>().await;
            }};
        }
        match store.strip_prefix("sqlite:") {
            Some(path) => serve!(SqliteStore::open(path).unwrap()),
            None => serve!(PgStore::connect_with_lease(store, LEASE).await.unwrap()),
        }
    });
}

fn spawn_child(store: &str) -> (Child, String, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", store])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ready"), "{line}");
    let hanging = words.next().unwrap().to_owned();
    let waiting = words.next().unwrap().to_owned();
    (child, hanging, waiting)
}

/// Evaluates `monitor` every [`EVERY`] until an alert of `rule` has fired, or `within` has
/// passed since `since`; returns it and when it came.
async fn reported<S: Store>(
    monitor: &mut Monitor<S>,
    alerts: &Mutex<Vec<(Instant, Alert)>>,
    rule: &str,
    since: Instant,
    within: Duration,
) -> (Alert, Duration) {
    loop {
        monitor.evaluate().await;
        if let Some((at, a)) = alerts
            .lock()
            .unwrap()
            .iter()
            .find(|(_, a)| a.rule == rule && a.firing)
        {
            return (a.clone(), at.duration_since(since));
        }
        assert!(
            since.elapsed() < within,
            "`{rule}` not reported within {within:?}"
        );
        tokio::time::sleep(EVERY).await;
    }
}

async fn scenario<S: Store>(name: &str, url: &str, store: S, leases_expire: bool) {
    let began = Instant::now();
    let (mut worker, hanging, waiting) = spawn_child(url);
    let started = Instant::now();
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&alerts);
    let mut monitor = Monitor::new(store)
        .rule(Rule::StepLongerThan(LIMIT))
        .rule(Rule::WaitLongerThan(LIMIT))
        .rule(Rule::LeaseExpiredFor(LIMIT))
        .sink(Sink::callback(move |a| {
            kept.lock().unwrap().push((Instant::now(), a.clone()))
        }));
    // Within the limit plus one look, and a margin for a loaded machine.
    let within = LIMIT + EVERY + Duration::from_secs(2);
    let (step, step_after) =
        reported(&mut monitor, &alerts, "step too long", started, within).await;
    assert_eq!(
        step.executions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![hanging.clone()]
    );
    let (wait, wait_after) =
        reported(&mut monitor, &alerts, "wait too long", started, within).await;
    assert_eq!(
        wait.executions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![waiting.clone()]
    );
    // The worker dies holding the hanging job.
    unsafe { libc::kill(worker.id() as i32, libc::SIGKILL) };
    worker.wait().unwrap();
    let killed = Instant::now();
    let mut lease_line = String::from("leases do not run out on SQLite (one worker per file)");
    if leases_expire {
        let within = LEASE + LIMIT + EVERY + Duration::from_secs(2);
        let (lease, after) = reported(&mut monitor, &alerts, "lease expired", killed, within).await;
        assert_eq!(
            lease
                .executions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![hanging.clone()]
        );
        lease_line = format!(
            "the killed worker's lease reported {} ms after SIGKILL (lease {} ms + limit {} ms)",
            after.as_millis(),
            LEASE.as_millis(),
            LIMIT.as_millis()
        );
    } else {
        for _ in 0..5 {
            monitor.evaluate().await;
        }
    }
    // Each fired once: looked at again and again, nothing more was sent.
    for _ in 0..5 {
        monitor.evaluate().await;
        tokio::time::sleep(EVERY).await;
    }
    let sent = alerts.lock().unwrap().len();
    assert_eq!(
        sent,
        if leases_expire { 3 } else { 2 },
        "{:?}",
        alerts.lock().unwrap()
    );
    println!(
        "stuck test on {name}: hanging step reported after {} ms, unanswered wait after {} ms \
         (limit {} ms, looked every {} ms); {lease_line}; {:.1} s",
        step_after.as_millis(),
        wait_after.as_millis(),
        LIMIT.as_millis(),
        EVERY.as_millis(),
        began.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2]);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fsm-stuck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.db");
    // The file exists before the monitor opens it read-only.
    drop(SqliteStore::open(&path).unwrap());
    let read_only = SqliteStore::open_with(
        &path,
        SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let url = format!("sqlite:{}", path.display());
    rt.block_on(scenario("SQLite", &url, read_only, false));
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(url) = std::env::var("DATABASE_URL") else {
        let line = "SKIPPED the stuck test on PostgreSQL: DATABASE_URL is not set (.ci/run starts \
                    a server)";
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        println!("{line}");
        return;
    };
    rt.block_on(async {
        let db = postgres::fresh_database(&url, "stuck").await;
        // The tables exist before the monitor reads them.
        drop(PgStore::connect(&db).await.unwrap());
        let monitor_store = PgStore::connect_with(&db, PgOptions::new().read_only(true))
            .await
            .unwrap();
        scenario("PostgreSQL", &db, monitor_store, true).await;
    });
}
