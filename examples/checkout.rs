//! The flagship: an order's checkout across inventory, payment, gift wrapping, shipping and
//! delivery, run durably on a SQLite file against simulated services.
//!
//! - order 1: the payment gateway fails twice, then succeeds (retries with backoff);
//! - order 2: the card is declined: the reservation is released, customer and support told
//!   at once (a parallel state: two notifications, each an execution of its own);
//! - order 3: a gift: wrapped before it ships;
//! - order 4: out of stock;
//! - order 5: needs a signature: it waits for the carrier to confirm delivery through a task
//!   token, out of memory, for as long as that takes;
//! - order 6: the fraud check is down: its charge fails for good, and the order ends errored;
//! - order 7: needs a signature, and the carrier loses the parcel: nobody answers its wait.
//!
//! The program starts the orders, runs a worker process, kills it (SIGKILL) half-way, and runs
//! a second worker, which resumes every order from its last checkpoint. Then it operates them
//! as a person on call would: a monitor reports the wait nobody answers, the fraud check is
//! fixed and order 6 redriven, the carrier's answer for order 7 is given by hand (checked
//! against the machine's definition the workers registered in the store), and a third worker
//! finishes both. The workers export metrics (Prometheus' text format), printed at the end.
//! The payment gateway
//! keeps a ledger keyed by idempotency key: each order is charged once, however many times
//! its charge step ran. Each step receives a typed state and returns only what its events
//! allow: a step that tried to ship an unpaid order would not compile.
//!
//! Run with `cargo run --example checkout`. Each run starts clean, in
//! `target/debug/examples/checkout-example/`; the files stay there to look at afterwards
//! (`sqlite3 target/debug/examples/checkout-example/orders.db`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{Context, DurableClient, Executor, Fsm, StepError, TaskToken};
use serde::{Deserialize, Serialize};

pub type OrderId = u32;
pub type Sku = String;

/// One order's checkout.
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Checkout {
    /// The customer placed the order.
    #[fsm(initial, on(reserve => Reserved | OutOfStock), timeout_ms = 2000)]
    Submitted {
        order: OrderId,
        /// Behind an `Arc`: the executor copies a state before its step, and a copy of an
        /// `Arc` allocates nothing.
        items: Arc<[Sku]>,
        gift: bool,
        signature: bool,
    },
    /// Inventory is held for the order; charge the customer.
    #[fsm(
        on(charge => Paid | PaymentDeclined),
        retry(max_attempts = 3, interval_ms = 100, backoff_rate = 2.0, jitter = full),
        timeout_ms = 1000,
        catch(gateway_unavailable | timeout => PaymentDeclined)
    )]
    Reserved {
        order: OrderId,
        reservation: u64,
        gift: bool,
        signature: bool,
    },
    /// The customer paid.
    #[fsm(on(wrap => Wrapped), on(ship => Shipped), on(hand_over => OutForDelivery))]
    Paid {
        order: OrderId,
        payment: String,
        gift: bool,
        signature: bool,
    },
    /// With the carrier, who confirms delivery (a signature) through a task token.
    #[fsm(wait(timeout_ms = 172_800_000), on(deliver => Delivered))]
    OutForDelivery { order: OrderId, tracking: String },
    /// Gift-wrapped, ready to ship.
    #[fsm(on(ship => Shipped))]
    Wrapped { order: OrderId },
    /// The payment failed; release the reservation and tell the customer and support, both
    /// at once: two notifications that do not wait for each other.
    #[fsm(
        parallel(customer = Notification, support = Notification),
        on(release => Cancelled),
        retry(max_attempts = 5, interval_ms = 50)
    )]
    PaymentDeclined {
        order: OrderId,
        reservation: u64,
        reason: String,
    },
    /// On its way to the customer.
    #[fsm(terminal)]
    Shipped { order: OrderId, tracking: String },
    /// Handed to the customer, who signed for it.
    #[fsm(terminal)]
    Delivered {
        order: OrderId,
        tracking: String,
        signed_by: String,
    },
    /// Nothing to sell.
    #[fsm(terminal(failure))]
    OutOfStock { order: OrderId },
    /// Cancelled after a failed payment.
    #[fsm(terminal(failure))]
    Cancelled { order: OrderId, reason: String },
}

/// One message to a customer or to support, sent by the mail service (retried while it is
/// busy): a branch of a declined order's `PaymentDeclined`.
#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Notification {
    /// Written, not yet sent.
    #[fsm(initial, on(send => Sent), retry(max_attempts = 3, interval_ms = 50))]
    Queued { to: String, text: String },
    /// Handed to the mail service.
    #[fsm(terminal)]
    Sent { to: String },
}

use checkout::*;

/// Simulated services: each call takes `latency`, like a network round trip.
#[derive(Default)]
pub struct Services {
    pub latency: Duration,
    pub stock: Mutex<HashMap<Sku, u32>>,
    pub reservations: Mutex<HashMap<u64, Vec<Sku>>>,
    pub next_reservation: AtomicU64,
    /// How many more times the gateway fails for an order before it answers.
    pub gateway_failures: Mutex<HashMap<OrderId, u32>>,
    pub declined: Vec<OrderId>,
    /// While this file exists, the fraud check refuses every charge of these orders.
    pub fraud_check_down: Option<(std::path::PathBuf, Vec<OrderId>)>,
    /// Idempotency keys of the charges made, so that a retried charge is not made twice.
    pub charges: Mutex<HashMap<String, String>>,
    /// The gateway's ledger on disk, when there is one: charges survive the process.
    pub ledger: Option<Mutex<rusqlite::Connection>>,
    pub outbox: Mutex<Vec<String>>,
    /// Tokens handed to the carrier, with their orders.
    pub carrier: Mutex<Vec<(OrderId, String)>>,
}

impl Services {
    async fn latency(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    async fn reserve(&self, items: &[Sku]) -> Option<u64> {
        self.latency().await;
        let mut stock = self.stock.lock().unwrap();
        if items
            .iter()
            .any(|sku| stock.get(sku).copied().unwrap_or(0) == 0)
        {
            return None;
        }
        for sku in items {
            *stock.entry(sku.clone()).or_default() -= 1;
        }
        let id = 100 + self.next_reservation.fetch_add(1, Ordering::Relaxed);
        self.reservations.lock().unwrap().insert(id, items.to_vec());
        Some(id)
    }

    async fn release(&self, reservation: u64) {
        self.latency().await;
        let items = self
            .reservations
            .lock()
            .unwrap()
            .remove(&reservation)
            .unwrap_or_default();
        let mut stock = self.stock.lock().unwrap();
        for sku in items {
            *stock.entry(sku).or_default() += 1;
        }
    }

    /// `Ok(Ok(payment))` charged, `Ok(Err(reason))` declined, `Err` the gateway is down.
    async fn charge(
        &self,
        order: OrderId,
        key: String,
    ) -> Result<Result<String, String>, StepError> {
        self.latency().await;
        if let Some(left) = self
            .gateway_failures
            .lock()
            .unwrap()
            .get_mut(&order)
            .filter(|n| **n > 0)
        {
            *left -= 1;
            return Err(StepError::retryable(
                "gateway_unavailable",
                "payment gateway answered 503",
            ));
        }
        if self.declined.contains(&order) {
            return Ok(Err("card declined by issuer".to_owned()));
        }
        if let Some((flag, orders)) = &self.fraud_check_down {
            if orders.contains(&order) && flag.exists() {
                return Err(StepError::fatal(
                    "fraud_check_down",
                    "the fraud check service refused every request",
                ));
            }
        }
        if let Some(ledger) = &self.ledger {
            let ledger = ledger.lock().unwrap();
            let payment = format!("pay_{order:04}");
            let sql = "INSERT INTO charge_calls (key, ord) VALUES (?1, ?2)";
            ledger
                .execute(sql, rusqlite::params![key, order])
                .map_err(|e| StepError::retryable(checkout::errors::GATEWAY_UNAVAILABLE, e))?;
            ledger
                .execute(
                    "INSERT OR IGNORE INTO charges (key, ord, payment) VALUES (?1, ?2, ?3)",
                    rusqlite::params![key, order, payment],
                )
                .map_err(|e| StepError::retryable(checkout::errors::GATEWAY_UNAVAILABLE, e))?;
            return Ok(Ok(payment));
        }
        let mut charges = self.charges.lock().unwrap();
        let payment = charges
            .entry(key)
            .or_insert_with(|| format!("pay_{order:04}"));
        Ok(Ok(payment.clone()))
    }

    async fn notify(&self, to: &str, message: String) {
        self.latency().await;
        self.outbox
            .lock()
            .unwrap()
            .push(format!("to {to}: {message}"));
    }
}

impl Steps for Services {
    async fn submitted(
        &self,
        order: Machine<Submitted>,
        _: Context,
    ) -> Result<SubmittedNext, StepError> {
        Ok(match self.reserve(&order.items).await {
            Some(reservation) => order
                .reserve(|s| Reserved {
                    order: s.order,
                    reservation,
                    gift: s.gift,
                    signature: s.signature,
                })
                .into(),
            None => order.reserve(|s| OutOfStock { order: s.order }).into(),
        })
    }

    async fn reserved(
        &self,
        order: Machine<Reserved>,
        cx: Context,
    ) -> Result<ReservedNext, StepError> {
        // The key is the same on every retry of this step: the gateway charges once.
        Ok(
            match self
                .charge(order.order, cx.idempotency_key().to_string())
                .await?
            {
                Ok(payment) => order
                    .charge(|r| Paid {
                        order: r.order,
                        payment,
                        gift: r.gift,
                        signature: r.signature,
                    })
                    .into(),
                Err(reason) => order
                    .charge(|r| PaymentDeclined {
                        order: r.order,
                        reservation: r.reservation,
                        reason,
                    })
                    .into(),
            },
        )
    }

    async fn paid(&self, order: Machine<Paid>, _: Context) -> Result<PaidNext, StepError> {
        self.latency().await;
        Ok(if order.gift {
            order.wrap(|p| Wrapped { order: p.order }).into()
        } else if order.signature {
            order
                .hand_over(|p| OutForDelivery {
                    order: p.order,
                    tracking: format!("1Z{:06}", p.order),
                })
                .into()
        } else {
            order
                .ship(|p| Shipped {
                    order: p.order,
                    tracking: format!("1Z{:06}", p.order),
                })
                .into()
        })
    }

    async fn wrapped(
        &self,
        order: Machine<Wrapped>,
        _: Context,
    ) -> Result<Machine<Shipped>, StepError> {
        self.latency().await;
        Ok(order.ship(|w| Shipped {
            order: w.order,
            tracking: format!("1Z{:06}", w.order),
        }))
    }

    async fn out_for_delivery(
        &self,
        order: Machine<OutForDelivery>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        // The carrier gets the token with the parcel, and answers when the customer signs.
        self.latency().await;
        let token = token.to_string();
        if let Some(ledger) = &self.ledger {
            let sql = "INSERT OR IGNORE INTO carrier (token, ord) VALUES (?1, ?2)";
            ledger
                .lock()
                .unwrap()
                .execute(sql, rusqlite::params![token, order.order])
                .map_err(|e| StepError::retryable("carrier_unavailable", e))?;
        }
        self.carrier.lock().unwrap().push((order.order, token));
        Ok(())
    }

    async fn payment_declined(
        &self,
        order: &Machine<PaymentDeclined>,
        _: Context,
    ) -> Result<(Notification, Notification), StepError> {
        // Releasing twice is harmless (a retry, or a restart after a crash): the reservation
        // is gone the second time.
        self.release(order.reservation).await;
        let message = |to: &str, text: String| {
            notification::Machine::new(notification::Queued {
                to: to.to_owned(),
                text,
            })
            .into()
        };
        Ok((
            message(
                "customer",
                format!("order {} cancelled: {}", order.order, order.reason),
            ),
            message(
                "support",
                format!("order {}: payment failed ({})", order.order, order.reason),
            ),
        ))
    }

    fn join_payment_declined(
        &self,
        order: Machine<PaymentDeclined>,
        _customer: fsm_core::Ended<Notification>,
        _support: fsm_core::Ended<Notification>,
    ) -> Machine<Cancelled> {
        // Both were sent: the order is cancelled, and everyone knows.
        order.release(|d| Cancelled {
            order: d.order,
            reason: d.reason,
        })
    }

    fn catch_reserved_to_payment_declined(
        &self,
        failed: Reserved,
        error: &StepError,
    ) -> PaymentDeclined {
        PaymentDeclined {
            order: failed.order,
            reservation: failed.reservation,
            reason: format!("payment could not be taken: {}", error.message()),
        }
    }
}

impl notification::Steps for Services {
    async fn queued(
        &self,
        message: notification::Machine<notification::Queued>,
        _: Context,
    ) -> Result<notification::Machine<notification::Sent>, StepError> {
        self.notify(&message.to, message.text.clone()).await;
        Ok(message.send(|m| notification::Sent { to: m.to }))
    }
}

/// The gateway's and the carrier's ledger, in a SQLite file of their own.
pub fn ledger(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("the ledger opens");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, ord INTEGER, payment TEXT);
         CREATE TABLE IF NOT EXISTS charge_calls (key TEXT, ord INTEGER);
         CREATE TABLE IF NOT EXISTS carrier (token TEXT PRIMARY KEY, ord INTEGER, signed INTEGER DEFAULT 0);",
    )
    .expect("the ledger's tables");
    conn
}

/// The orders of the example, and what the simulated services do with them.
fn orders() -> Vec<(&'static str, Checkout)> {
    let order = |order: OrderId, items: &[&str], gift: bool, signature: bool| Submitted {
        order,
        items: items
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into(),
        gift,
        signature,
    };
    vec![
        (
            "gateway fails twice, then succeeds",
            Machine::new(order(1, &["mug"], false, false)).into(),
        ),
        (
            "card declined",
            Machine::new(order(2, &["tea"], false, false)).into(),
        ),
        (
            "a gift",
            Machine::new(order(3, &["tea", "mug"], true, false)).into(),
        ),
        (
            "out of stock",
            Machine::new(order(4, &["kettle"], false, false)).into(),
        ),
        (
            "needs a signature",
            Machine::new(order(5, &["kettle-descaler"], false, true)).into(),
        ),
        (
            "the fraud check is down",
            Machine::new(order(6, &["mug"], false, false)).into(),
        ),
        (
            "the carrier loses the parcel",
            Machine::new(order(7, &["tea"], false, true)).into(),
        ),
    ]
}

fn services(dir: &std::path::Path) -> Services {
    let stock = [
        ("mug", 10),
        ("tea", 10),
        ("kettle", 0),
        ("kettle-descaler", 3),
    ];
    Services {
        latency: Duration::from_millis(150),
        stock: Mutex::new(stock.iter().map(|(s, n)| (s.to_string(), *n)).collect()),
        gateway_failures: Mutex::new(HashMap::from([(1, 2)])),
        declined: vec![2],
        fraud_check_down: Some((dir.join("fraud-check-down"), vec![6])),
        ledger: Some(Mutex::new(ledger(&dir.join("ledger.db")))),
        ..Services::default()
    }
}

type Durable = fsm_core::DurableExecutor<Checkout, Services, fsm_core::SqliteStore>;

/// The orders' store, once the process before has let go of it.
fn orders_store(dir: &std::path::Path) -> fsm_core::SqliteStore {
    loop {
        match fsm_core::SqliteStore::open(dir.join("orders.db")) {
            Ok(store) => break store,
            // The worker before is still going away.
            Err(fsm_core::StoreError::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn open(dir: &std::path::Path) -> Durable {
    let store = orders_store(dir);
    Executor::<Checkout, _>::builder(services(dir))
        .metrics()
        .observer(|id, event| {
            if let fsm_core::EventKind::Transition { from, to, .. } = event.kind {
                let id = id.to_string();
                println!(
                    "  [worker {}] {}: {from} -> {to}",
                    std::process::id(),
                    &id[24..]
                );
            }
        })
        .durable(store)
        .expect("inside a tokio runtime")
}

/// The order whose parcel the carrier loses: nobody answers its wait.
const LOST: OrderId = 7;

/// A worker process: runs every order until none is running, and none waiting but for the
/// lost parcel; plays the carrier, who confirms a delivery a little after the parcel is handed
/// over; and writes the metrics it exported (Prometheus' text format) to `metrics.prom`.
async fn worker(dir: &std::path::Path) {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of the process");
    let executor = open(dir);
    loop {
        let tokens: Vec<(String, OrderId)> = {
            let ledger = executor.steps().ledger.as_ref().unwrap().lock().unwrap();
            let mut stmt = ledger
                .prepare("SELECT token, ord FROM carrier WHERE signed = 0 AND ord <> ?1")
                .unwrap();
            let rows = stmt
                .query_map([LOST], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        for (token, order) in tokens {
            tokio::time::sleep(Duration::from_millis(300)).await;
            println!(
                "  [worker {}] the carrier confirms order {order}: signed by A. Customer",
                std::process::id()
            );
            let done = executor
                .complete::<OutForDelivery, _>(&token, |parcel| {
                    parcel.deliver(|p| Delivered {
                        order: p.order,
                        tracking: p.tracking,
                        signed_by: "A. Customer".into(),
                    })
                })
                .await;
            match done {
                Ok(_) | Err(fsm_core::TokenError::AlreadyUsed) => {
                    let ledger = executor.steps().ledger.as_ref().unwrap().lock().unwrap();
                    ledger
                        .execute("UPDATE carrier SET signed = 1 WHERE token = ?1", [&token])
                        .unwrap();
                }
                Err(e) => panic!("the carrier's token was refused: {e}"),
            }
        }
        let open = |status| executor.list(fsm_core::ListQuery::new().status(status).limit(0));
        let running = open(fsm_core::ExecutionStatus::Running).await.unwrap();
        let waiting = open(fsm_core::ExecutionStatus::Waiting).await.unwrap();
        let mut only_lost = running.executions.is_empty();
        for e in &waiting.executions {
            let state = executor.state(e.id).await.unwrap();
            only_lost &= matches!(state, Checkout::OutForDelivery { order: LOST, .. });
        }
        if only_lost {
            let file = dir.join(format!("metrics-{}.prom", std::process::id()));
            std::fs::write(file, metrics.render()).unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_worker(dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--worker")
        .arg(dir)
        .spawn()
        .expect("the worker starts")
}

/// On call: the monitor reports the wait nobody answers; the fraud check is fixed and order 6
/// redriven; the carrier's answer for order 7 is given by hand; a third worker finishes both.
/// (The `fsm` command line does the same: `fsm --store sqlite:orders.db redrive <id>`,
/// `fsm ... complete <id> --next '{"Delivered":{...}}'`.)
async fn operate(dir: &std::path::Path, ids: &[fsm_core::ExecutionId]) {
    use fsm_core::{Monitor, Operator, Rule, Sink, Store};
    let store = fsm_core::SqliteStore::open_client(dir.join("orders.db")).unwrap();
    println!("\non call:");
    for id in &ids[5..] {
        let row = store.get(*id).await.unwrap().unwrap();
        let error = row.error.map(|e| format!(": {e}")).unwrap_or_default();
        println!("  {id}: {} in {}{error}", row.status, row.state_name);
    }
    let mut monitor = Monitor::new(store.clone())
        .rule(Rule::WaitLongerThan(Duration::from_secs(1)))
        .sink(Sink::callback(|alert| {
            let named: Vec<String> = alert.executions.iter().map(|id| id.to_string()).collect();
            println!("  alert: {alert} [{}]", named.join(", "));
        }));
    let looked = std::time::Instant::now();
    while monitor.firing().is_empty() && looked.elapsed() < Duration::from_secs(10) {
        monitor.evaluate().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        monitor.firing().len(),
        1,
        "the lost parcel's wait is reported"
    );

    std::fs::remove_file(dir.join("fraud-check-down")).unwrap();
    let ops = Operator::new(store, "ops:example");
    ops.redrive(ids[5]).await.unwrap();
    println!("  the fraud check is fixed: redrove order 6 ({})", ids[5]);
    let answer = serde_json::json!({ "Delivered": {
        "order": LOST, "tracking": "1Z000007", "signed_by": "the neighbour" } });
    ops.complete(ids[6], &answer).await.unwrap();
    println!("  the carrier called: order 7 completed by hand with {answer}");
    let mut third = spawn_worker(dir);
    println!("\nworker {} takes them on", third.id());
    assert!(third.wait().unwrap().success(), "the third worker finished");
    monitor.evaluate().await;
    assert!(monitor.firing().is_empty(), "the alert cleared");
}

/// The metrics each worker exported, as a scrape would read them: the counters.
fn print_metrics(dir: &std::path::Path) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "prom"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        println!(
            "\nexported by worker {}:",
            name.trim_start_matches("metrics-")
        );
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            if line.starts_with("fsm_") && (line.contains("_total") || line.contains("_count")) {
                println!("  {line}");
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(std::path::Path::new(&args[2])).await;
        return;
    }
    // Each run starts clean, next to the example's binary (under `target/`).
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().join("checkout-example");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    print!("{}", Checkout::DEFINITION);
    println!("\nstore: {}", dir.join("orders.db").display());
    std::fs::write(dir.join("fraud-check-down"), "").unwrap();

    // Start the orders: each start is committed before `start` returns. This process only
    // starts them (a client runs nothing): the workers run them.
    let client = DurableClient::<Checkout, _>::new(orders_store(&dir));
    let mut ids = Vec::new();
    for (title, order) in orders() {
        let id = client.start(order).await.unwrap();
        println!("started {id}: order {}: {title}", ids.len() + 1);
        ids.push(id);
    }
    drop(client);

    // A first worker, killed with SIGKILL once the gateway has charged two orders.
    let mut first = spawn_worker(&dir);
    println!("\nworker {} runs the orders", first.id());
    let ledger = ledger(&dir.join("ledger.db"));
    let charged = || -> i64 {
        ledger
            .query_row("SELECT count(*) FROM charges", [], |r| r.get(0))
            .unwrap()
    };
    let waited = std::time::Instant::now();
    while charged() < 2 && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    println!(
        "\nkilled worker {} (SIGKILL) after {} charges; in the store now:",
        first.id(),
        charged()
    );
    let store = fsm_core::SqliteStore::open_with(
        dir.join("orders.db"),
        fsm_core::SqliteOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let reader = Executor::<Checkout, _>::builder(Services::default())
        .durable(store)
        .unwrap();
    for id in &ids {
        let row = reader.get(*id).await.unwrap();
        println!("  {id}: {:<9} {}", row.status.as_str(), row.state_name);
    }
    drop(reader);

    // A second worker resumes every order from its last checkpoint.
    let mut second = spawn_worker(&dir);
    println!("\nworker {} resumes them", second.id());
    assert!(
        second.wait().unwrap().success(),
        "the second worker finished"
    );
    operate(&dir, &ids).await;

    let client = DurableClient::<Checkout, _>::new(orders_store(&dir));
    for (i, id) in ids.iter().enumerate() {
        let row = client.get(*id).await.unwrap();
        let state = client.state(*id).await.unwrap();
        println!(
            "\norder {}: {} in {state:?}\n{}",
            i + 1,
            row.status,
            client.history(*id).await.unwrap()
        );
    }
    println!("payments (the gateway's ledger, keyed by idempotency key):");
    let mut stmt = ledger
        .prepare("SELECT ord, count(*), (SELECT count(*) FROM charges c WHERE c.ord = calls.ord) FROM charge_calls calls GROUP BY ord ORDER BY ord")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (order, calls, charges) = row.unwrap();
        println!("  order {order}: charge requested {calls} time(s), charged {charges} time(s)");
        assert_eq!(charges, 1, "each order is charged once");
    }
    print_metrics(&dir);
}
