//! Several workers on PostgreSQL: two worker processes share ten orders; a client that runs
//! no step (it could be an API server) starts them and, playing the carrier, completes the
//! task token each order waits on. Half-way, one worker is killed with SIGKILL: its orders
//! are taken over by the other once their leases (2 s here) run out, from their last
//! checkpoints. At the end, each order's history shows which worker ran which step.
//!
//! Needs a server: `DATABASE_URL=postgres://user@host:port/db cargo run --example workers`
//! (it creates and uses a database `fsm_example_workers` on that server). Without
//! `DATABASE_URL` it says so and does nothing.
//!
//! The same binary is the worker (`workers --worker <url>`): it runs until its standard input
//! closes, and prints each token it hands out on standard output for the client to read.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fsm_core::{
    Context, DurableClient, DurableOptions, EventKind, ExecutionStatus, Executor, Fsm, PgStore,
    StepError, TaskToken, TokenError,
};
use serde::{Deserialize, Serialize};

/// An order, from payment to delivery.
#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Order {
    #[fsm(initial, on(charge => Paid))]
    Placed { order: u32 },
    #[fsm(on(pack => Packed))]
    Paid { order: u32, payment: String },
    /// Waits for the carrier to confirm delivery.
    #[fsm(wait(timeout_ms = 60_000), on(deliver => Delivered))]
    Packed { order: u32, payment: String },
    #[fsm(terminal)]
    Delivered { order: u32, payment: String },
}

/// A worker's services: each step takes a moment and says which process ran it.
struct Warehouse {
    pid: u32,
}

impl Warehouse {
    async fn work(&self, what: &str, order: u32) {
        println!("worker {}: {what} order {order}", self.pid);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

impl order::Steps for Warehouse {
    async fn placed(
        &self,
        o: order::Machine<order::Placed>,
        cx: Context,
    ) -> Result<order::Machine<order::Paid>, StepError> {
        self.work("charges", o.order).await;
        // The payment service would dedupe on this key: a step run again charges once.
        let payment = cx.idempotency_key().to_string();
        Ok(o.charge(|p| order::Paid {
            order: p.order,
            payment,
        }))
    }

    async fn paid(
        &self,
        o: order::Machine<order::Paid>,
        _: Context,
    ) -> Result<order::Machine<order::Packed>, StepError> {
        self.work("packs", o.order).await;
        Ok(o.pack(|p| order::Packed {
            order: p.order,
            payment: p.payment,
        }))
    }

    async fn packed(
        &self,
        o: order::Machine<order::Packed>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        self.work("hands to the carrier", o.order).await;
        // The carrier (the client, here) reads the token from this line.
        let mut out = std::io::stdout().lock();
        writeln!(out, "TOKEN {token}").map_err(|e| StepError::retryable("carrier", e))?;
        out.flush().map_err(|e| StepError::retryable("carrier", e))
    }
}

/// A worker process: runs orders until its standard input closes.
fn worker(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = PgStore::connect_with_lease(url, Duration::from_secs(2))
            .await
            .unwrap();
        let pid = std::process::id();
        // At most 5 orders at a time each: the two workers share the ten.
        let mut options = DurableOptions::default();
        options.max_in_flight = 5;
        let ex = Executor::<Order, _>::builder(Warehouse { pid })
            .durable_with(store, options)
            .unwrap();
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
            .await
            .unwrap()
            .unwrap();
        ex.shutdown().await;
    });
}

/// Starts a worker process; its token lines go to `tokens`.
fn spawn_worker(url: &str, tokens: std::sync::mpsc::Sender<String>) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--worker")
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            match line.strip_prefix("TOKEN ") {
                Some(token) => drop(tokens.send(token.to_owned())),
                None => println!("{line}"),
            }
        }
    });
    child
}

/// A fresh database for the example on the server of `url`; its URL.
async fn fresh_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("DATABASE_URL={url}: {e}"));
    tokio::spawn(conn);
    for sql in [
        "DROP DATABASE IF EXISTS fsm_example_workers",
        "CREATE DATABASE fsm_example_workers",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/fsm_example_workers")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2]);
        return;
    }
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!(
            "this example needs a PostgreSQL server: \
             DATABASE_URL=postgres://user@host:port/db cargo run --example workers"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = fresh_database(&url).await;
        // The client runs nothing: it needs no step handlers.
        let client = DurableClient::<Order, _>::new(PgStore::connect(&url).await.unwrap());
        let (tx, tokens) = std::sync::mpsc::channel();
        let mut workers = [spawn_worker(&url, tx.clone()), spawn_worker(&url, tx)];
        println!(
            "workers {} and {} share the orders",
            workers[0].id(),
            workers[1].id()
        );
        let mut orders = HashMap::new();
        for order in 1..=10 {
            let id = client
                .start(order::Machine::new(order::Placed { order }))
                .await
                .unwrap();
            orders.insert(id, order);
        }

        // Half-way, the first worker dies; the second takes its orders over.
        tokio::time::sleep(Duration::from_millis(400)).await;
        workers[0].kill().unwrap();
        workers[0].wait().unwrap();
        println!("worker {} killed (SIGKILL)", workers[0].id());

        // The carrier delivers each order it was handed, through the client. A worker that
        // takes over a hand-over the killed one had begun hands the same token out again.
        let mut delivered = std::collections::HashSet::new();
        while delivered.len() < orders.len() {
            let token = tokens.recv_timeout(Duration::from_secs(30)).unwrap();
            let answer = client
                .complete::<order::Packed, _>(&token, |p| {
                    p.deliver(|d| order::Delivered {
                        order: d.order,
                        payment: d.payment,
                    })
                })
                .await;
            match answer {
                Ok(id) => {
                    println!("carrier: delivered order {}", orders[&id]);
                    delivered.insert(id);
                }
                Err(TokenError::AlreadyUsed) => println!("carrier: that order was delivered"),
                Err(e) => panic!("the carrier's token was refused: {e}"),
            }
        }
        let mut by_order: Vec<_> = orders.iter().collect();
        by_order.sort_by_key(|(_, order)| **order);
        for (id, order) in by_order {
            let row = client.finished(*id).await.unwrap();
            assert_eq!(row.status, ExecutionStatus::Succeeded);
            let resumed = client
                .history(*id)
                .await
                .unwrap()
                .events()
                .iter()
                .filter(|e| matches!(e.kind, EventKind::ExecutionResumed { .. }))
                .count();
            println!(
                "order {order}: {} in {}{}",
                row.status,
                row.state_name,
                if resumed > 0 {
                    " (taken over after the kill)"
                } else {
                    ""
                }
            );
        }
        drop(workers[1].stdin.take());
        workers[1].wait().unwrap();
    });
}
