//! Metrics through the `metrics` facade (feature `metrics`): what executors and operators
//! report, named as Step Functions' and Temporal's users know them, labelled by machine,
//! state, status and error kind, never by execution.

use std::sync::Arc;

use metrics::{counter, histogram};

use crate::runtime::recorder::Observer;
use crate::{EventKind, ExecutionId, HistoryEvent, StepError};

/// An observer that reports `machine`'s events, then hands them to `user`'s observer.
pub(crate) fn observer(machine: &'static str, user: Option<Observer>) -> Observer {
    Arc::new(move |id: ExecutionId, e: &HistoryEvent| {
        event(machine, e);
        if let Some(user) = &user {
            user(id, e);
        }
    })
}

/// Reports one history event of `machine`.
pub(crate) fn event(machine: &'static str, e: &HistoryEvent) {
    match &e.kind {
        EventKind::ExecutionStarted { .. } => started(machine),
        EventKind::StepSucceeded {
            state, duration, ..
        } => {
            histogram!("fsm_step_duration_seconds", "machine" => machine, "state" => *state)
                .record(duration.as_secs_f64());
            counter!("fsm_step_attempts_total", "machine" => machine, "state" => *state,
                "outcome" => "succeeded")
            .increment(1);
        }
        EventKind::StepFailed {
            state,
            duration,
            error,
            ..
        } => {
            histogram!("fsm_step_duration_seconds", "machine" => machine, "state" => *state)
                .record(duration.as_secs_f64());
            counter!("fsm_step_attempts_total", "machine" => machine, "state" => *state,
                "outcome" => "failed", "error_kind" => error.kind().to_owned())
            .increment(1);
        }
        EventKind::StepTimedOut { state, timeout, .. } => {
            histogram!("fsm_step_duration_seconds", "machine" => machine, "state" => *state)
                .record(timeout.as_secs_f64());
            counter!("fsm_step_attempts_total", "machine" => machine, "state" => *state,
                "outcome" => "timed_out")
            .increment(1);
        }
        EventKind::ExecutionSucceeded { .. } => {
            counter!("fsm_executions_succeeded_total", "machine" => machine).increment(1);
            histogram!("fsm_execution_duration_seconds", "machine" => machine,
                "status" => "succeeded")
            .record(e.at.as_secs_f64());
        }
        EventKind::ExecutionFailed {
            state, error: None, ..
        } => {
            counter!("fsm_executions_failed_total", "machine" => machine, "state" => *state)
                .increment(1);
            histogram!("fsm_execution_duration_seconds", "machine" => machine,
                "status" => "failed")
            .record(e.at.as_secs_f64());
        }
        EventKind::ExecutionFailed {
            state,
            error: Some(error),
            ..
        } => {
            if error.kind() == StepError::TIMEOUT {
                counter!("fsm_executions_timed_out_total", "machine" => machine,
                    "state" => *state)
                .increment(1);
            } else {
                counter!("fsm_executions_errored_total", "machine" => machine,
                    "state" => *state, "error_kind" => error.kind().to_owned())
                .increment(1);
            }
            histogram!("fsm_execution_duration_seconds", "machine" => machine,
                "status" => "errored")
            .record(e.at.as_secs_f64());
        }
        _ => {}
    }
}

/// An execution of `machine` started (a durable start is written before it is observed).
pub(crate) fn started(machine: &str) {
    counter!("fsm_executions_started_total", "machine" => machine.to_owned()).increment(1);
}

/// A durable execution of `machine` was claimed `waited` seconds after it was due.
#[cfg(feature = "durable")]
pub(crate) fn schedule_to_start(machine: &'static str, waited: f64) {
    histogram!("fsm_schedule_to_start_seconds", "machine" => machine).record(waited);
}

/// An operator redrove (`"redriven"`) or cancelled (`"cancelled"`) an execution of `machine`.
#[cfg(feature = "durable")]
pub(crate) fn operated(machine: &str, what: &'static str) {
    let name = match what {
        "redriven" => "fsm_executions_redriven_total",
        _ => "fsm_executions_cancelled_total",
    };
    counter!(name, "machine" => machine.to_owned()).increment(1);
}

/// Where `machine`'s executions stand, as the monitor last counted them.
#[cfg(feature = "durable")]
pub(crate) fn standing(machine: &str, stats: &crate::store::Stats, now: crate::store::Millis) {
    use crate::ExecutionStatus;
    use metrics::gauge;
    for status in [ExecutionStatus::Running, ExecutionStatus::Waiting] {
        gauge!("fsm_executions_open", "machine" => machine.to_owned(),
            "status" => status.as_str())
        .set(stats.with_status(status) as f64);
    }
    gauge!("fsm_backlog", "machine" => machine.to_owned()).set(stats.backlog as f64);
    let oldest = stats
        .oldest_waits
        .first()
        .map_or(0.0, |w| now.saturating_sub(w.entered_at) as f64 / 1000.0);
    gauge!("fsm_wait_age_seconds", "machine" => machine.to_owned()).set(oldest);
}
