//! With the `tracing` feature: one span per execution and one per step attempt, carrying the
//! execution id, the state and the attempt. Run with `cargo test -p fsm-core --features tracing`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fsm_core::{Context, Executor, Fsm, StepError};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Fsm, Clone)]
pub enum Upload {
    #[fsm(initial, on(send => Sent), retry(max_attempts = 2, interval_ms = 10))]
    Pending { tries_left: u32 },
    #[fsm(terminal)]
    Sent,
}

struct Uploader {
    failures: Mutex<u32>,
}

impl upload::Steps for Uploader {
    async fn pending(
        &self,
        up: upload::Machine<upload::Pending>,
        _: Context,
    ) -> Result<upload::Machine<upload::Sent>, StepError> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(StepError::retryable("network", "connection reset"));
        }
        Ok(up.send(|_| upload::Sent))
    }
}

/// A span's name and its fields, as `(name, value)` pairs.
type SpanRecord = (String, Vec<(String, String)>);

/// A subscriber that keeps each span's name and fields.
#[derive(Clone, Default)]
struct Spans {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(Vec::new());
        span.record(&mut fields);
        self.spans
            .lock()
            .unwrap()
            .push((span.metadata().name().to_owned(), fields.0));
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn one_span_per_execution_and_one_per_step_attempt() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let executor = Executor::<Upload, _>::new(Uploader {
        failures: Mutex::new(1),
    });
    let outcome =
        runtime.block_on(executor.run(upload::Machine::new(upload::Pending { tries_left: 3 })));
    assert!(outcome.is_success());

    let spans = spans.spans.lock().unwrap();
    let id = outcome.id.to_string();
    let field = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let executions: Vec<_> = spans
        .iter()
        .filter(|(name, _)| name == "execution")
        .collect();
    assert_eq!(executions.len(), 1);
    assert_eq!(field(&executions[0].1, "execution"), id);
    assert_eq!(field(&executions[0].1, "machine"), "\"Upload\"");
    let steps: Vec<_> = spans
        .iter()
        .filter(|(name, _)| name == "step")
        .map(|(_, f)| {
            (
                field(f, "state"),
                field(f, "attempt"),
                field(f, "execution"),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("\"Pending\"".into(), "1".into(), id.clone()),
            ("\"Pending\"".into(), "2".into(), id)
        ]
    );
}
