//! The monitor on both stores (a module of `tests/durable.rs`, sharing its harness and the
//! help desk of `ops.rs`): each rule fires once when its condition starts and once when it
//! clears, names the executions, and reaches a callback and a webhook.

use super::ops::{desk, ticket, Desk, Ticket};
use super::*;
use fsm_core::{Alert, Monitor, Rule, Sink};

/// A sink that keeps what it is sent.
fn kept() -> (Sink, Arc<Mutex<Vec<Alert>>>) {
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let alerts = Arc::clone(&alerts);
        Sink::callback(move |a| alerts.lock().unwrap().push(a.clone()))
    };
    (sink, alerts)
}

on_both_stores!(
    a_failure_rate_fires_once_names_the_failures_and_clears_when_they_age_out,
    async
);
async fn a_failure_rate_fires_once_names_the_failures_and_clears_when_they_age_out(db: Db) {
    let d = Desk::default();
    d.broken.store(true, Ordering::SeqCst);
    let ex = desk(&db, d).await;
    let mut failed = Vec::new();
    for id in 1..=3 {
        let id = ex
            .start(ticket::Machine::new(ticket::Opened { id }))
            .await
            .unwrap();
        failed.push(id);
        ex.finished(id).await.unwrap();
    }
    ex.steps().broken.store(false, Ordering::SeqCst);
    let rejected = ex
        .start(ticket::Machine::new(ticket::Opened { id: 0 }))
        .await
        .unwrap();
    ex.finished(rejected).await.unwrap();
    let (sink, alerts) = kept();
    let window = Duration::from_millis(1500);
    let mut monitor = Monitor::new(db.store_beside_worker().await)
        .rule(Rule::FailureRate {
            above: 0.5,
            window,
            at_least: 4,
        })
        .sink(sink);
    let fired = monitor.evaluate().await;
    // 3 of 4 errored in `Opened` (75%); 1 of 4 failed in `Rejected` (25%): one alert.
    assert_eq!(fired.len(), 1, "{fired:?}");
    let a = &fired[0];
    assert_eq!(
        (a.rule, a.subject.as_str(), a.firing),
        ("failure rate", "Ticket/Opened", true)
    );
    assert_eq!(a.count, 3);
    let mut named = a.executions.clone();
    named.sort();
    failed.sort();
    assert_eq!(named, failed);
    assert!(a.message.contains("3 of 4 executions"), "{}", a.message);
    // Still true: nothing new is sent.
    assert!(monitor.evaluate().await.is_empty());
    assert_eq!(alerts.lock().unwrap().len(), 1);
    assert_eq!(monitor.firing().len(), 1);
    // Once they are older than the window, it clears, once.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let cleared = monitor.evaluate().await;
    assert_eq!(cleared.len(), 1);
    assert!(!cleared[0].firing);
    assert!(monitor.evaluate().await.is_empty());
    assert_eq!(alerts.lock().unwrap().len(), 2);
    assert!(monitor.firing().is_empty());
    assert_eq!(monitor.recent().len(), 2);
}

on_both_stores!(
    a_backlog_no_worker_takes_up_is_reported_and_clears_once_a_worker_runs_it,
    async
);
async fn a_backlog_no_worker_takes_up_is_reported_and_clears_once_a_worker_runs_it(db: Db) {
    // Started by a client, with no worker running: due, and nobody takes it up.
    drop(db.store().await);
    let store = db.store_beside_worker().await;
    let client = DurableClient::<Ticket, _>::new(store.clone());
    let id = client
        .start(ticket::Machine::new(ticket::Opened { id: 4 }))
        .await
        .unwrap();
    let (sink, _) = kept();
    let mut monitor = Monitor::new(store.clone())
        .machine("Ticket")
        .rule(Rule::BacklogOlderThan(Duration::from_millis(200)))
        .rule(Rule::OpenLongerThan(Duration::from_secs(3600)))
        .sink(sink);
    assert!(monitor.evaluate().await.is_empty(), "not old enough yet");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fired = monitor.evaluate().await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].rule, "backlog");
    assert_eq!(fired[0].subject, "Ticket");
    assert_eq!(fired[0].executions, vec![id]);
    let ex = desk(&db, Desk::default()).await;
    ex.idle().await;
    let cleared = monitor.evaluate().await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(!cleared[0].firing && cleared[0].rule == "backlog");
}

/// A local HTTP server that answers `status` to each request and keeps their bodies.
async fn http_server(status: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many bytes as Content-Length says.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|l| l.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        assert!(head.starts_with("POST /alerts HTTP/1.1"), "{head}");
                        kept.lock().unwrap().push(body.to_owned());
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (url, bodies)
}

on_both_stores!(
    alerts_are_posted_to_a_webhook_as_json_and_a_webhook_that_refuses_stops_nothing,
    async
);
async fn alerts_are_posted_to_a_webhook_as_json_and_a_webhook_that_refuses_stops_nothing(db: Db) {
    let ex = desk(&db, Desk::default()).await;
    let id = ex
        .start(ticket::Machine::new(ticket::Opened { id: 5 }))
        .await
        .unwrap();
    until_async(|| async { ex.get(id).await.unwrap().status == ExecutionStatus::Waiting }).await;
    let (url, bodies) = http_server("204 No Content").await;
    let (refusing, refused) = http_server("500 Internal Server Error").await;
    let (sink, kept_alerts) = kept();
    let mut monitor = Monitor::new(db.store_beside_worker().await)
        .rule(Rule::WaitLongerThan(Duration::from_millis(100)))
        .sink(Sink::Webhook(refusing))
        .sink(Sink::Webhook("http://127.0.0.1:9/closed".into()))
        .sink(Sink::Webhook(url))
        .sink(sink);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fired = monitor.evaluate().await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let posted = bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let json: serde_json::Value = serde_json::from_str(&posted[0]).unwrap();
    assert_eq!(json["rule"], "wait too long");
    assert_eq!(json["state"], "firing");
    assert_eq!(json["subject"], "Ticket");
    assert_eq!(json["count"], 1);
    assert_eq!(json["executions"][0], id.to_string());
    // The refusing webhook was tried three times; the callback after it still got the alert.
    assert_eq!(refused.lock().unwrap().len(), 3);
    assert_eq!(kept_alerts.lock().unwrap().len(), 1);
    // Answered: cleared, and posted as such.
    let token = ex.steps().tokens.lock().unwrap()[0].1.clone();
    ex.complete::<ticket::Assigned, _>(&token, super::ops::close)
        .await
        .unwrap();
    ex.finished(id).await.unwrap();
    let cleared = monitor.evaluate().await;
    assert_eq!(cleared.len(), 1);
    let posted = bodies.lock().unwrap().clone();
    let json: serde_json::Value = serde_json::from_str(&posted[1]).unwrap();
    assert_eq!(json["state"], "cleared");
}
