//! A durable machine run as a service, as a user runs it: `examples/service.rs`, built by
//! `cargo test`, run as separate processes on a real SQLite file and, with `DATABASE_URL`, a
//! real PostgreSQL database. A worker serves; four API processes start one order name sixteen
//! times each at once (one execution); the worker is killed with SIGKILL while the order waits
//! for its carrier; a new worker starts; a webhook process answers the carrier's token beside
//! it (on SQLite, a second writing process on the file the worker holds); the history says who
//! answered; SIGTERM stops the worker cleanly.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "support/postgres.rs"]
mod postgres;

/// The service example, as `cargo test` built it.
fn service() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("service")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(service()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A worker process once it is ready, and the rest of what it prints.
fn worker(db: &str, outbox: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(service())
        .args(["worker", db, outbox.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The token the carrier got for `order`.
fn carrier_token(outbox: &Path, order: u32) -> String {
    for _ in 0..1_500 {
        let text = std::fs::read_to_string(outbox).unwrap_or_default();
        let prefix = format!("{order} ");
        if let Some(line) = text.lines().find(|l| l.starts_with(&prefix)) {
            return line[prefix.len()..].to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the carrier never got order {order}");
}

/// Waits until `show` says what `done` looks for.
fn until_shown(db: &str, name: &str, done: &str) -> String {
    for _ in 0..500 {
        let shown = run(&["show", db, name]);
        if shown.contains(done) {
            return shown;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} never showed {done:?}: {}", run(&["show", db, name]));
}

fn the_service(db: &str, dir: &Path) {
    let outbox = dir.join("outbox.txt");
    let (mut first, _) = worker(db, &outbox);

    // 16 concurrent starts of one name from each of 4 processes: one execution, and every
    // start answers with its id.
    let starters: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(service())
                .args(["start", db, "order-9", "9", "16"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    for starter in starters {
        let out = starter.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        lines.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    assert_eq!(lines.len(), 64, "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("created=true")).count(),
        1,
        "{lines:?}"
    );
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{lines:?}");
    let id = *ids.iter().next().unwrap();

    // The worker dies while order 9 waits for its carrier.
    let token = carrier_token(&outbox, 9);
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut second, said) = worker(db, &outbox);

    // The carrier's webhook, a process of its own beside the new worker, answers; the same
    // token again, and a forged one, are refused.
    let mut webhook = Command::new(service())
        .args(["webhook", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_webhook = webhook.stdin.take().unwrap();
    let forged = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { '1' } else { '0' }
    );
    writeln!(to_webhook, "{token}\n{token}\n{forged}").unwrap();
    drop(to_webhook);
    let out = webhook.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let answered: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        answered,
        [
            format!("delivered {id}"),
            "refused the task token was already used".to_owned(),
            "refused no such task token was handed out".to_owned(),
        ]
    );

    // The worker took it on at once, and the history says who answered.
    let shown = until_shown(db, "order-9", "succeeded in Delivered");
    assert!(
        shown.starts_with(&format!("order-9: {id} succeeded")),
        "{shown}"
    );
    assert!(shown.contains("answered by carrier-webhook"), "{shown}");
    assert_eq!(
        shown.matches("step started         Placed").count(),
        1,
        "{shown}"
    );

    // A retried start of a name that ended still starts nothing.
    let again = run(&["start", db, "order-9", "9"]);
    assert_eq!(again.trim(), format!("started {id} created=false"));

    // SIGTERM: the worker stops cleanly.
    let pid = libc::pid_t::try_from(second.id()).unwrap();
    // SAFETY: `kill` takes no pointers; `pid` is our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = second.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        said.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("stopped")
    );
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fsm-service-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_service_on_sqlite_a_worker_api_processes_and_a_webhook_beside_it() {
    let dir = fresh_dir("sqlite");
    let db = dir.join("orders.db");
    the_service(db.to_str().unwrap(), &dir);
}

#[test]
fn a_service_on_postgresql() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "SKIPPED the service on PostgreSQL: DATABASE_URL is not set (.ci/run starts a server)"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(postgres::fresh_database(&url, "service"));
    the_service(&db, &fresh_dir("postgres"));
}
