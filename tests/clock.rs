//! PostgreSQL keeps time by the server's clock: workers and clients whose clocks are off by a
//! minute, either way (Debian's `faketime` in front of this test binary, run as a child
//! process), neither leave due executions waiting nor claim executions another worker holds.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{Context, DurableClient, ExecutionId, Executor, Fsm, PgStore, StepError};
use serde::{Deserialize, Serialize};

#[path = "support/postgres.rs"]
mod postgres;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Job {
    #[fsm(initial, on(work => Working))]
    Queued { n: u32 },
    #[fsm(on(finish => Done))]
    Working { n: u32 },
    #[fsm(terminal)]
    Done { n: u32 },
}

/// Counts each run of each step (by idempotency key); the first step pauses.
#[derive(Clone)]
struct Paced {
    runs: Arc<Mutex<Vec<String>>>,
    pause: Duration,
}

impl Paced {
    fn ran(&self, cx: &Context) {
        let key = cx.idempotency_key().to_string();
        // Children report on stdout, read by the parent.
        println!("ran {key}");
        let _ = std::io::stdout().flush();
        self.runs.lock().unwrap().push(key);
    }
}

impl job::Steps for Paced {
    async fn queued(
        &self,
        m: job::Machine<job::Queued>,
        cx: Context,
    ) -> Result<job::Machine<job::Working>, StepError> {
        self.ran(&cx);
        tokio::time::sleep(self.pause).await;
        Ok(m.work(|s| job::Working { n: s.n }))
    }

    async fn working(
        &self,
        m: job::Machine<job::Working>,
        cx: Context,
    ) -> Result<job::Machine<job::Done>, StepError> {
        self.ran(&cx);
        Ok(m.finish(|s| job::Done { n: s.n }))
    }
}

const ROLE: &str = "FSM_TEST_CLOCK_ROLE";
const LEASE: Duration = Duration::from_millis(1_000);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn worker(url: &str, pause: Duration) -> fsm_core::DurableExecutor<Job, Paced, PgStore> {
    let store = PgStore::connect_with_lease(url, LEASE).await.unwrap();
    let paced = Paced {
        runs: Arc::default(),
        pause,
    };
    Executor::<Job, Paced>::builder(paced)
        .durable(store)
        .unwrap()
}

/// What a child process does, by its role: start one execution and print its id, or work
/// for three seconds.
fn child(role: &str, url: &str) {
    runtime().block_on(async {
        match role {
            "client" => {
                let store = PgStore::connect_with_lease(url, LEASE).await.unwrap();
                let client = DurableClient::<Job, _>::new(store);
                let id = client
                    .start(job::Machine::new(job::Queued { n: 1 }))
                    .await
                    .unwrap();
                println!("started {id}");
            }
            "worker" => {
                let w = worker(url, Duration::ZERO).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                w.shutdown().await;
                println!("stopped");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// Runs this binary as `role` with its clock shifted by `shift` (`+60s`, `-60s`), and returns
/// its output.
fn shifted(role: &str, shift: &str, url: &str) -> String {
    let out = Command::new("faketime")
        .arg("-f")
        .arg(shift)
        .arg(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env("FSM_TEST_CLOCK_URL", url)
        // tokio's timers keep the real monotonic clock; the wall clock is shifted.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{role} at {shift}: {stdout}");
    stdout
}

fn skipped(what: &str, why: &str) {
    let line = format!("SKIPPED {what}: {why}");
    println!("{line}");
    let required = match what {
        w if w.contains("faketime") => "FSM_REQUIRE_TOOLS",
        _ => "FSM_REQUIRE_POSTGRES",
    };
    assert!(std::env::var_os(required).is_none(), "{line}");
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role, &std::env::var("FSM_TEST_CLOCK_URL").unwrap());
        return;
    }
    let Ok(url) = std::env::var("DATABASE_URL") else {
        skipped(
            "the clock tests on PostgreSQL",
            "DATABASE_URL is not set (.ci/run starts a server)",
        );
        return;
    };
    let faketime = Command::new("faketime")
        .args(["-f", "+0s", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !faketime {
        skipped(
            "the clock tests (faketime)",
            "faketime is not installed (Debian's package faketime; .ci/run installs it)",
        );
        return;
    }
    let rt = runtime();
    let url = rt.block_on(postgres::fresh_database(&url, "clock"));
    a_client_a_minute_ahead_starts_an_execution_that_runs_at_once(&rt, &url);
    a_worker_a_minute_behind_takes_over_a_dead_workers_execution_when_its_lease_runs_out(&rt, &url);
    a_worker_a_minute_ahead_does_not_claim_an_execution_another_worker_holds(&rt, &url);
    println!("clock tests: ok");
}

fn a_client_a_minute_ahead_starts_an_execution_that_runs_at_once(
    rt: &tokio::runtime::Runtime,
    url: &str,
) {
    let out = shifted("client", "+60s", url);
    let id: ExecutionId = out
        .lines()
        .find_map(|l| l.strip_prefix("started "))
        .unwrap()
        .parse()
        .unwrap();
    rt.block_on(async {
        let w = worker(url, Duration::ZERO).await;
        let row = tokio::time::timeout(Duration::from_secs(10), w.finished(id))
            .await
            .expect("an execution started by a client a minute ahead waited for its clock")
            .unwrap();
        assert_eq!(row.state_name, "Done");
        w.shutdown().await;
    });
    println!("a client a minute ahead: its execution ran at once");
}

fn a_worker_a_minute_behind_takes_over_a_dead_workers_execution_when_its_lease_runs_out(
    rt: &tokio::runtime::Runtime,
    url: &str,
) {
    // A worker on the right clock claims the execution and dies inside its first step.
    let id = {
        let dying = runtime();
        let id = dying.block_on(async {
            let w = worker(url, Duration::from_secs(3600)).await;
            let id = w
                .start(job::Machine::new(job::Queued { n: 2 }))
                .await
                .unwrap();
            while w.steps().runs.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::mem::forget(w);
            id
        });
        dying.shutdown_background();
        id
    };
    // Its lease (1 s) runs out by the server's clock while a worker a minute behind looks.
    let out = shifted("worker", "-60s", url);
    let first_step = format!("ran {id}-step-0");
    assert!(
        out.contains(&first_step),
        "a worker a minute behind did not take over within 3 s: {out}"
    );
    rt.block_on(async {
        let client = DurableClient::<Job, _>::new(PgStore::connect(url).await.unwrap());
        assert_eq!(client.get(id).await.unwrap().state_name, "Done");
    });
    println!("a worker a minute behind: took over the dead worker's execution");
}

fn a_worker_a_minute_ahead_does_not_claim_an_execution_another_worker_holds(
    rt: &tokio::runtime::Runtime,
    url: &str,
) {
    rt.block_on(async {
        // A live worker holds the execution for 4 s of its first step, renewing its 1 s
        // lease, while a worker a minute ahead works beside it.
        let w = worker(url, Duration::from_secs(4)).await;
        let id = w
            .start(job::Machine::new(job::Queued { n: 3 }))
            .await
            .unwrap();
        while w.steps().runs.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let url = url.to_owned();
        let out = tokio::task::spawn_blocking(move || shifted("worker", "+60s", &url))
            .await
            .unwrap();
        let first_step = format!("ran {id}-step-0");
        assert!(
            !out.contains(&first_step),
            "a worker a minute ahead ran a step another worker was running: {out}"
        );
        let row = w.finished(id).await.unwrap();
        assert_eq!(row.state_name, "Done");
        assert_eq!(
            w.steps().runs.lock().unwrap().clone(),
            [format!("{id}-step-0"), format!("{id}-step-1")]
        );
        w.shutdown().await;
    });
    println!("a worker a minute ahead: claimed nothing another worker held");
}
