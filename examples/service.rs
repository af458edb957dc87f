//! A durable machine run as a small service, the way a shop would run it: a worker process
//! that runs the steps until it is told to stop, API processes that start orders under their
//! order number (a retried start starts nothing twice), and a webhook process that answers
//! the carrier's task tokens, all beside one another on one SQLite file (or one PostgreSQL
//! database), with the worker killed with SIGKILL in between.
//!
//! `cargo run --example service` runs the whole story in a temporary directory. Each role is
//! also a command of its own, as a deployment would run them (`<store>` is a SQLite file or
//! a `postgres://` URL):
//!
//! ```text
//! service worker  <store> <outbox>           serves until SIGTERM or SIGINT; hands each
//!                                            carrier token to <outbox>, one line per order
//! service start   <store> <name> <order> [N] starts order <order> under <name>, N times at
//!                                            once (as retries would); prints what each did
//! service webhook <store>                    answers each token read from standard input,
//!                                            as the carrier's webhook would
//! service show    <store> <name>             the execution of that name and its history
//! ```

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fsm_core::{
    Context, DurableClient, DurableError, Executor, Fsm, PgStore, SqliteStore, StepError, Store,
    TaskToken,
};
use serde::{Deserialize, Serialize};

/// An order: paid, then delivered when the carrier's webhook says so.
#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Order {
    #[fsm(
        initial,
        on(charge => Paid),
        retry(max_attempts = 3, interval_ms = 200),
        catch(card_declined => Declined)
    )]
    Placed { order: u32 },
    /// Waits for the carrier to confirm delivery (a day at most).
    #[fsm(wait(timeout_ms = 86_400_000), on(deliver => Delivered))]
    Paid { order: u32, payment: String },
    #[fsm(terminal)]
    Delivered { order: u32, payment: String },
    #[fsm(terminal(failure))]
    Declined { order: u32 },
}

/// The worker's services: a payment gateway and a carrier.
struct Shop {
    /// Where the carrier's tokens go, one line per order (`<order> <token>`).
    outbox: PathBuf,
}

impl order::Steps for Shop {
    async fn placed(
        &self,
        o: order::Machine<order::Placed>,
        cx: Context,
    ) -> Result<order::Machine<order::Paid>, StepError> {
        // The gateway takes a moment, and dedupes on the idempotency key: a charge run again
        // after a crash is not made twice.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if o.order.is_multiple_of(13) {
            // A kind the machine routes, by its generated constant: a typo would not compile.
            return Err(StepError::fatal(
                order::errors::CARD_DECLINED,
                "insufficient funds",
            ));
        }
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
        token: TaskToken,
    ) -> Result<(), StepError> {
        let mut outbox = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.outbox)
            .map_err(|e| StepError::retryable("carrier_unavailable", e))?;
        writeln!(outbox, "{} {token}", o.order)
            .map_err(|e| StepError::retryable("carrier_unavailable", e))
    }

    fn catch_placed_to_declined(&self, failed: order::Placed, _: &StepError) -> order::Declined {
        order::Declined {
            order: failed.order,
        }
    }
}

/// A worker: serves until SIGTERM or SIGINT, then lets the orders in flight reach their next
/// checkpoint and stops.
async fn worker<S: Store>(store: S, outbox: PathBuf) {
    let worker = Executor::<Order, _>::builder(Shop { outbox })
        .durable(store)
        .expect("a worker");
    println!("ready");
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    worker
        .serve(async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
    println!("stopped");
}

/// Starts order `order` under `name`, `times` times at once (as a client's retries would).
async fn start<S: Store>(store: S, name: &str, order: u32, times: usize) {
    let client = DurableClient::<Order, _>::new(store);
    let starts = (0..times).map(|_| {
        let client = client.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            client
                .start_named(name, order::Machine::new(order::Placed { order }))
                .await
        })
    });
    for start in starts.collect::<Vec<_>>() {
        match start.await.unwrap() {
            Ok(started) => println!("started {} created={}", started.id, started.created),
            Err(e) => println!("refused {e}"),
        }
    }
}

/// The carrier's webhook: completes the wait of each token it receives (one per line here;
/// an HTTP handler would get it from the request's body).
async fn webhook<S: Store>(store: S) {
    let client = DurableClient::<Order, _>::new(store).answering_as("carrier-webhook");
    let mut lines = std::io::stdin().lock().lines();
    while let Some(Ok(token)) = lines.next() {
        let delivered = client
            .complete::<order::Paid, _>(token.trim(), |p| {
                p.deliver(|d| order::Delivered {
                    order: d.order,
                    payment: d.payment,
                })
            })
            .await;
        match delivered {
            Ok(id) => println!("delivered {id}"),
            Err(e) => println!("refused {e}"),
        }
    }
}

/// The execution named `name`: where it stands, and its history.
async fn show<S: Store>(store: S, name: &str) -> Result<(), DurableError> {
    let client = DurableClient::<Order, _>::new(store);
    let Some(found) = client.lookup(name).await? else {
        println!("no order named {name}");
        return Ok(());
    };
    println!(
        "{name}: {} {} in {}",
        found.id, found.status, found.state_name
    );
    print!("{}", client.history(found.id).await?);
    Ok(())
}

/// Runs a role on the store `url`: a PostgreSQL URL, else a SQLite file (opened as the worker
/// by the worker, and as a client beside it by the others).
async fn role(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let (command, url) = (arg(0), arg(1));
    macro_rules! on_store {
        ($store:ident => $run:expr) => {
            if url.starts_with("postgres://") {
                let $store = PgStore::connect(url).await.expect("the database");
                $run
            } else if command == "worker" {
                let $store = SqliteStore::open(url).expect("the database file");
                $run
            } else {
                let $store = SqliteStore::open_client(url).expect("the database file");
                $run
            }
        };
    }
    match command {
        "worker" => on_store!(s => worker(s, PathBuf::from(arg(2))).await),
        "start" => {
            let order = arg(3).parse().expect("an order number");
            let times = arg(4).parse().unwrap_or(1);
            on_store!(s => start(s, arg(2), order, times).await)
        }
        "webhook" => on_store!(s => webhook(s).await),
        "show" => on_store!(s => show(s, arg(2)).await.expect("the store")),
        other => panic!("unknown command {other:?}: see the example's header"),
    }
}

/// This binary, running `args`.
fn me(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(args);
    command
}

/// A worker process, once it is ready.
fn spawn_worker(db: &str, outbox: &Path) -> Child {
    let mut child = me(&["worker", db, outbox.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok);
    assert_eq!(ready.as_deref(), Some("ready"));
    // What it says later (`stopped`), shown as it comes.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("worker: {line}");
        }
    });
    child
}

/// The line the carrier got for `order`, once it has it.
fn carrier_token(outbox: &Path, order: u32) -> String {
    for _ in 0..1_000 {
        let text = std::fs::read_to_string(outbox).unwrap_or_default();
        let prefix = format!("{order} ");
        if let Some(line) = text.lines().find(|l| l.starts_with(&prefix)) {
            return line[prefix.len()..].to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the carrier never got order {order}");
}

/// Sends SIGTERM to `child`, as a service manager stops a worker.
fn terminate(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a process id");
    // SAFETY: `kill` takes no pointers; `pid` is our own child, not yet waited for.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM to {pid}");
}

/// The whole story, on a SQLite file in a temporary directory.
fn demo() {
    let dir = std::env::temp_dir().join(format!("fsm-service-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (db, outbox) = (dir.join("orders.db"), dir.join("outbox.txt"));
    let db = db.to_str().unwrap();

    let mut worker = spawn_worker(db, &outbox);
    println!("worker {} serves {db}", worker.id());
    // Four API processes start order 9 sixteen times each, at once: one execution.
    let starters: Vec<Child> = (0..4)
        .map(|_| {
            me(&["start", db, "order-9", "9", "16"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut created = 0;
    for starter in starters {
        let out = String::from_utf8(starter.wait_with_output().unwrap().stdout).unwrap();
        created += out.matches("created=true").count();
    }
    println!("64 starts of order-9 from 4 processes: {created} execution created");
    let declined = me(&["start", db, "order-26", "26"]).output().unwrap();
    print!("order-26: {}", String::from_utf8_lossy(&declined.stdout));

    // The carrier has order 9's token; the worker is killed before the delivery.
    let token = carrier_token(&outbox, 9);
    worker.kill().unwrap();
    worker.wait().unwrap();
    println!("worker killed (SIGKILL); a new one starts");
    let mut worker = spawn_worker(db, &outbox);

    // The carrier's webhook answers, beside the new worker.
    let mut webhook = me(&["webhook", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_webhook = webhook.stdin.take().unwrap();
    writeln!(to_webhook, "{token}").unwrap();
    writeln!(to_webhook, "{token}").unwrap();
    drop(to_webhook);
    let answered = String::from_utf8(webhook.wait_with_output().unwrap().stdout).unwrap();
    print!("webhook: {answered}");

    std::thread::sleep(Duration::from_millis(300));
    for name in ["order-9", "order-26"] {
        let shown = me(&["show", db, name]).output().unwrap();
        print!("{}", String::from_utf8_lossy(&shown.stdout));
    }
    // SIGTERM: the worker stops at its next checkpoint.
    terminate(&worker);
    worker.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        demo();
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(role(&args));
}
