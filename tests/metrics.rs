//! Metrics through the `metrics` facade, read back as Prometheus' exporter renders them: the
//! in-memory executor, a durable worker on SQLite, an operator and the monitor each report
//! what they should, labelled by machine, state, status and error kind, never by execution;
//! an executor built without `.metrics()` reports nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fsm_core::{
    Context, DurableClient, ExecutionId, Executor, Fsm, Monitor, Operator, SqliteStore, StepError,
    TaskToken,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Refund {
    #[fsm(
        initial,
        on(approve => Approved | Rejected),
        retry(max_attempts = 1, interval_ms = 1)
    )]
    Requested { amount: u32 },
    #[fsm(wait, on(pay => Paid))]
    Approved { amount: u32 },
    #[fsm(terminal)]
    Paid { amount: u32 },
    #[fsm(terminal(failure))]
    Rejected { amount: u32 },
}

#[derive(Default)]
struct Bank {
    tokens: std::sync::Mutex<Vec<String>>,
    calls: AtomicU32,
}

impl refund::Steps for Bank {
    async fn requested(
        &self,
        r: refund::Machine<refund::Requested>,
        _: Context,
    ) -> Result<refund::RequestedNext, StepError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match r.amount {
            0 => Ok(r.approve(|s| refund::Rejected { amount: s.amount }).into()),
            13 => Err(StepError::retryable("ledger", "locked")),
            _ => Ok(r.approve(|s| refund::Approved { amount: s.amount }).into()),
        }
    }

    async fn approved(
        &self,
        _: refund::Machine<refund::Approved>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        self.tokens.lock().unwrap().push(token.to_string());
        Ok(())
    }
}

/// The sum of the rendered series whose name is `name` and whose labels contain every one of
/// `parts`; `None` if there is none.
fn series(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let matches =
                head.split('{').next() == Some(name) && parts.iter().all(|p| head.contains(p));
            matches.then(|| value.parse().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn executors_operators_and_the_monitor_report_through_the_metrics_facade() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fsm-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids: Vec<ExecutionId> = Vec::new();
    rt.block_on(async {
        // In memory: one rejected, one errored after its retry.
        let ex = Executor::<Refund, Bank>::builder(Bank::default())
            .metrics()
            .build();
        let rejected = ex
            .run(refund::Machine::new(refund::Requested { amount: 0 }))
            .await;
        assert_eq!(rejected.state.state_name(), "Rejected");
        let errored = ex
            .run(refund::Machine::new(refund::Requested { amount: 13 }))
            .await;
        assert_eq!(errored.state.state_name(), "Requested");
        // Built without `.metrics()`: nothing.
        let quiet = Executor::<Refund, Bank>::new(Bank::default());
        quiet
            .run(refund::Machine::new(refund::Requested { amount: 0 }))
            .await;

        // Durable, on SQLite: a client starts, the worker claims.
        let path = dir.join("refunds.db");
        let worker = Executor::<Refund, Bank>::builder(Bank::default())
            .metrics()
            .durable(SqliteStore::open(&path).unwrap())
            .unwrap();
        let client =
            DurableClient::<Refund, _>::new(SqliteStore::open_client(&path).unwrap()).metrics();
        let waiting = client
            .start(refund::Machine::new(refund::Requested { amount: 5 }))
            .await
            .unwrap();
        let paid = worker
            .start(refund::Machine::new(refund::Requested { amount: 6 }))
            .await
            .unwrap();
        let failing = worker
            .start(refund::Machine::new(refund::Requested { amount: 13 }))
            .await
            .unwrap();
        ids.extend([waiting, paid, failing]);
        worker.finished(failing).await.unwrap();
        while worker.steps().tokens.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.idle().await;
        let token = worker
            .steps()
            .tokens
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.contains(&paid.to_string()))
            .unwrap()
            .clone();
        worker
            .complete::<refund::Approved, _>(&token, |r| {
                r.pay(|s| refund::Paid { amount: s.amount })
            })
            .await
            .unwrap();
        worker.finished(paid).await.unwrap();
        let ops = Operator::new(SqliteStore::open_client(&path).unwrap(), "ops");
        ops.redrive(failing).await.unwrap();
        worker.finished(failing).await.unwrap();
        ops.cancel(failing).await.unwrap_err();
        let cancelled = client
            .start(refund::Machine::new(refund::Requested { amount: 7 }))
            .await
            .unwrap();
        ids.push(cancelled);
        while worker.steps().tokens.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ops.cancel(cancelled).await.unwrap();
        let mut monitor = Monitor::new(SqliteStore::open_client(&path).unwrap()).metrics();
        monitor.evaluate().await;
        worker.shutdown().await;
    });
    let text = handle.render();
    if std::env::var_os("FSM_SHOW_METRICS").is_some() {
        println!("{text}");
    }
    let m = r#"machine="Refund""#;
    let value = |name: &str, parts: &[&str]| {
        series(&text, name, parts).unwrap_or_else(|| panic!("no {name} {parts:?} in\n{text}"))
    };
    // In memory 3 (one quiet executor's not counted), durable 4.
    assert_eq!(value("fsm_executions_started_total", &[m]), 6.0);
    assert_eq!(
        value("fsm_executions_failed_total", &[m, r#"state="Rejected""#]),
        1.0
    );
    // Errored twice (in memory, and durably before the redrive), each after 2 attempts.
    assert_eq!(
        value(
            "fsm_executions_errored_total",
            &[m, r#"state="Requested""#, r#"error_kind="ledger""#]
        ),
        3.0,
        "the redriven one errored again"
    );
    assert_eq!(
        value(
            "fsm_step_attempts_total",
            &[
                m,
                r#"state="Requested""#,
                r#"outcome="failed""#,
                r#"error_kind="ledger""#
            ]
        ),
        6.0
    );
    assert!(value("fsm_step_attempts_total", &[m, r#"outcome="succeeded""#]) >= 4.0);
    assert!(
        value(
            "fsm_step_duration_seconds_count",
            &[m, r#"state="Requested""#]
        ) >= 10.0
    );
    assert_eq!(value("fsm_executions_succeeded_total", &[m]), 1.0);
    assert!(
        value(
            "fsm_execution_duration_seconds_count",
            &[m, r#"status="succeeded""#]
        ) >= 1.0
    );
    assert!(value("fsm_schedule_to_start_seconds_count", &[m]) >= 2.0);
    assert_eq!(value("fsm_executions_redriven_total", &[m]), 1.0);
    assert_eq!(value("fsm_executions_cancelled_total", &[m]), 1.0);
    assert_eq!(
        value("fsm_executions_open", &[m, r#"status="waiting""#]),
        1.0
    );
    assert_eq!(
        value("fsm_executions_open", &[m, r#"status="running""#]),
        0.0
    );
    assert_eq!(value("fsm_backlog", &[m]), 0.0);
    assert!(value("fsm_wait_age_seconds", &[m]) > 0.0);
    for id in &ids {
        assert!(
            !text.contains(&id.to_string()),
            "an execution id in a label"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
