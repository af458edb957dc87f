//! The console's executions list on a store of 1,000,000 executions, as the server answers
//! it (the router, from the request to the rendered page; no network), on SQLite and (with
//! `DATABASE_URL`) PostgreSQL; and the memory of a console serving 50 open pages that receive
//! live updates.
//!
//! - divan's table: the first page (newest first, no filter), a filtered page (failed, newest
//!   first) and a search in the state's data, on SQLite.
//! - After it, for each store: p50 and p99 of 200 requests of each page, and the resident
//!   memory of the process with 50 pages open on `/live` (each watching its 50 rows, some
//!   changing) against the same process before they opened.
//!
//! The stores are filled once (1,000,000 executions of two machines: 90% succeeded, 4%
//! errored, 1% failed, 4% waiting, 1% running; data with one of 1,000 customers) and kept
//! for the next run: a SQLite file under the target directory, the PostgreSQL database
//! `fsm_console_bench`. `cargo bench -p fsm-console --bench list`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use fsm_console::{router, ConsoleOptions};
use fsm_core::store::{ListQuery, NewExecution, Store};
use fsm_core::{ExecutionId, ExecutionRecord, ExecutionStatus, SqliteStore, WaitingFor};
use http_body_util::BodyExt;
use tower::ServiceExt;

const EXECUTIONS: u64 = 1_000_000;

/// The pages timed: the first page, a filtered one, a search in the data.
const PAGES: [(&str, &str); 3] = [
    ("first page", "/"),
    ("failed, newest first", "/?status=failed"),
    ("data holds c17@example.com", "/?data=c17%40example.com"),
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The SQLite file of 1,000,000 executions, filled if it is not already.
fn sqlite(rt: &tokio::runtime::Runtime) -> SqliteStore {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-1m.db");
    rt.block_on(async {
        let store = SqliteStore::open(&path).unwrap();
        fill(&store).await;
        store
    })
}

/// Makes `store` hold [`EXECUTIONS`] executions, unless it does.
async fn fill<S: Store + Clone>(store: &S) {
    let have = store.count(ListQuery::new()).await.unwrap();
    if have == EXECUTIONS {
        return;
    }
    assert_eq!(
        have, 0,
        "the bench's store holds {have} executions: remove it"
    );
    let began = Instant::now();
    let now = fsm_console::time::now();
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..EXECUTIONS {
        let (status, waiting_for) = match i % 100 {
            0..90 => (ExecutionStatus::Succeeded, None),
            90..94 => (ExecutionStatus::Errored, None),
            94 => (ExecutionStatus::Failed, None),
            95..99 => (ExecutionStatus::Waiting, Some(WaitingFor::Token)),
            _ => (ExecutionStatus::Running, None),
        };
        // One a second for the last 1,000,000 seconds (11.6 days), newest first.
        let at = now - i * 1000;
        let id = ExecutionId::from_u128(
            (u128::from(at) << 80) | 0x7000_8000_0000_0000_0000 | u128::from(i),
        );
        let machine = if i % 10 < 7 { "Order" } else { "Payment" };
        let record = ExecutionRecord {
            id,
            name: Some(format!("{}-{i}", machine.to_lowercase())),
            machine: machine.into(),
            fingerprint: "0".into(),
            state_name: "Packed".into(),
            state: format!(
                "{{\"Packed\":{{\"customer\":\"c{}@example.com\",\"total\":{}}}}}",
                i % 1000,
                i % 500
            ),
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
    eprintln!(
        "filled the store with {EXECUTIONS} executions in {:?}",
        began.elapsed()
    );
}

/// One page from the router, to the last byte; panics unless it is a 200.
async fn fetch(app: &axum::Router, uri: &str) -> usize {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{uri}");
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

/// The console's router on `store`, once its live query has run.
fn console<S: Store + Clone>(rt: &tokio::runtime::Runtime, store: S) -> axum::Router {
    let app = rt.block_on(async { router(store, ConsoleOptions::default()) });
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
    app
}

#[divan::bench(args = PAGES.map(|(name, _)| name), sample_count = 50, sample_size = 1)]
fn sqlite_page(bencher: divan::Bencher, name: &str) {
    let rt = runtime();
    let app = console(&rt, sqlite(&rt));
    let uri = PAGES.iter().find(|(n, _)| *n == name).unwrap().1;
    bencher.bench_local(|| rt.block_on(fetch(&app, uri)));
}

/// p50 and p99 of `times`.
fn p50_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.5), p(0.99))
}

/// Resident memory and its peak, from /proc (Linux), in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// p50/p99 of each page on `store`, then 50 open pages on a served console.
fn report<S: Store + Clone>(rt: &tokio::runtime::Runtime, name: &str, store: S) {
    let app = console(rt, store.clone());
    for (page, uri) in PAGES {
        let times: Vec<Duration> = (0..200)
            .map(|_| {
                let began = Instant::now();
                rt.block_on(fetch(&app, uri));
                began.elapsed()
            })
            .collect();
        let (p50, p99) = p50_p99(times);
        println!(
            "{name}, {page}: p50 {p50:.2?}, p99 {p99:.2?} (200 requests, 1,000,000 executions)"
        );
    }
    drop(app);
    pages_open(rt, name, store);
}

/// Serves the console on loopback, opens 50 pages' live streams (each watching 50 of the
/// newest waiting executions, 10 of which a writer changes every second), and reads the
/// process's memory after 10 s.
fn pages_open<S: Store + Clone>(rt: &tokio::runtime::Runtime, name: &str, store: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = store.clone();
    let server = rt.spawn(async move {
        fsm_console::serve(served, addr, false, ConsoleOptions::default(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
    let (before, _) = rss_mib();
    let waiting = rt
        .block_on(
            store.list(
                ListQuery::new()
                    .status(ExecutionStatus::Waiting)
                    .newest_first()
                    .limit(50 * 50),
            ),
        )
        .unwrap()
        .executions;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut pages = Vec::new();
    for page in waiting.chunks(50) {
        let ids: Vec<String> = page.iter().map(|e| e.id.to_string()).collect();
        let request = format!(
            "GET /live?ids={} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            ids.join(",")
        );
        let received = received.clone();
        pages.push(rt.spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        received.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A writer: 10 of the watched executions change every second.
    let ops = fsm_core::Operator::new(store.clone(), "bench");
    let changing: Vec<ExecutionId> = waiting.iter().step_by(10).map(|e| e.id).take(100).collect();
    rt.block_on(async {
        for ten in changing.chunks(10) {
            for id in ten {
                let _ = ops.cancel(*id).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (after, peak) = rss_mib();
    println!(
        "{name}: console with 50 open pages receiving live updates for 10 s: resident {after:.1} MiB \
         ({:+.1} MiB against none open; peak {peak:.1} MiB; {} KiB of events sent)",
        after - before,
        received.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );
    for page in pages {
        page.abort();
    }
    let _ = stop.send(());
    let _ = rt.block_on(server);
    // Put the cancelled executions back as they were, for the next run.
    rt.block_on(async {
        for id in changing {
            let _ = ops.redrive(id).await;
        }
    });
}

fn main() {
    divan::main();
    let rt = runtime();
    report(&rt, "SQLite", sqlite(&rt));
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let store = rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let exists = client
                    .query(
                        "SELECT 1 FROM pg_database WHERE datname = 'fsm_console_bench'",
                        &[],
                    )
                    .await
                    .unwrap();
                if exists.is_empty() {
                    client
                        .batch_execute("CREATE DATABASE fsm_console_bench")
                        .await
                        .unwrap();
                }
                let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
                let store = fsm_core::PgStore::connect(&format!("{base}/fsm_console_bench"))
                    .await
                    .unwrap();
                fill(&store).await;
                store
            });
            report(&rt, "PostgreSQL", store);
        }
        Err(_) => println!("SKIPPED the PostgreSQL figures: DATABASE_URL is not set"),
    }
}
