//! Metrics through the `metrics` facade (feature `metrics`): what executors and operators
//! report, named as Step Functions' and Temporal's users know them, labelled by machine,
//! state, status and error kind, never by execution.

use std::sync::{Arc, OnceLock};

use metrics::{counter, histogram, Counter, Histogram};

use crate::runtime::recorder::Observer;
use crate::{Definition, EventKind, ExecutionId, HistoryEvent, StepError};

/// The handles of one state's metrics.
struct StateHandles {
    step_duration: Histogram,
    succeeded: Counter,
    timed_out: Counter,
    executions_failed: Counter,
    executions_timed_out: Counter,
}

/// The handles of a machine's metrics, registered once with the recorder (looking a metric
/// up by its name and labels at every event costs more than the step it counts).
struct Handles {
    started: Counter,
    succeeded: Counter,
    duration: [Histogram; 3],
    states: Vec<StateHandles>,
    /// The addresses of the states' names (events carry the definition's names), sorted,
    /// with each state's index.
    by_name: Vec<(usize, usize)>,
}

impl Handles {
    fn new(def: &'static Definition) -> Self {
        let machine = def.name;
        let states = def
            .states
            .iter()
            .map(|s| {
                let state = s.name;
                let attempts = |outcome: &'static str| {
                    counter!("fsm_step_attempts_total", "machine" => machine, "state" => state,
                        "outcome" => outcome)
                };
                StateHandles {
                    step_duration: histogram!("fsm_step_duration_seconds",
                        "machine" => machine, "state" => state),
                    succeeded: attempts("succeeded"),
                    timed_out: attempts("timed_out"),
                    executions_failed: counter!("fsm_executions_failed_total",
                        "machine" => machine, "state" => state),
                    executions_timed_out: counter!("fsm_executions_timed_out_total",
                        "machine" => machine, "state" => state),
                }
            })
            .collect();
        let duration = |status: &'static str| histogram!("fsm_execution_duration_seconds", "machine" => machine, "status" => status);
        Handles {
            started: counter!("fsm_executions_started_total", "machine" => machine),
            succeeded: counter!("fsm_executions_succeeded_total", "machine" => machine),
            duration: [
                duration("succeeded"),
                duration("failed"),
                duration("errored"),
            ],
            states,
            by_name: {
                let mut by_name: Vec<(usize, usize)> = def
                    .states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.as_ptr() as usize, i))
                    .collect();
                by_name.sort_unstable();
                by_name
            },
        }
    }

    fn state(&self, def: &'static Definition, name: &'static str) -> Option<&StateHandles> {
        let address = name.as_ptr() as usize;
        let i = match self.by_name.binary_search_by_key(&address, |(a, _)| *a) {
            Ok(found) => self.by_name[found].1,
            Err(_) => def.state_index(name)?,
        };
        self.states.get(i)
    }
}

/// An observer that reports the events of `def`'s executions, then hands them to `user`'s
/// observer. Its handles are registered at the first event (with whatever recorder is
/// installed by then: install it before running executions).
pub(crate) fn observer(def: &'static Definition, user: Option<Observer>) -> Observer {
    let handles = OnceLock::new();
    Arc::new(move |id: ExecutionId, e: &HistoryEvent| {
        event(def, handles.get_or_init(|| Handles::new(def)), e);
        if let Some(user) = &user {
            user(id, e);
        }
    })
}

/// Reports one history event of `def`'s.
fn event(def: &'static Definition, h: &Handles, e: &HistoryEvent) {
    let state = |name| h.state(def, name);
    match &e.kind {
        EventKind::ExecutionStarted { .. } => h.started.increment(1),
        EventKind::StepSucceeded {
            state: name,
            duration,
            ..
        } => {
            if let Some(s) = state(name) {
                s.step_duration.record(duration.as_secs_f64());
                s.succeeded.increment(1);
            }
        }
        EventKind::StepFailed {
            state: name,
            duration,
            error,
            ..
        } => {
            if let Some(s) = state(name) {
                s.step_duration.record(duration.as_secs_f64());
            }
            // The error's kind is the user's: looked up each time (failures are rare).
            counter!("fsm_step_attempts_total", "machine" => def.name, "state" => *name,
                "outcome" => "failed", "error_kind" => error.kind().to_owned())
            .increment(1);
        }
        EventKind::StepTimedOut {
            state: name,
            timeout,
            ..
        } => {
            if let Some(s) = state(name) {
                s.step_duration.record(timeout.as_secs_f64());
                s.timed_out.increment(1);
            }
        }
        EventKind::ExecutionSucceeded { .. } => {
            h.succeeded.increment(1);
            h.duration[0].record(e.at.as_secs_f64());
        }
        EventKind::ExecutionFailed {
            state: name,
            error: None,
            ..
        } => {
            if let Some(s) = state(name) {
                s.executions_failed.increment(1);
            }
            h.duration[1].record(e.at.as_secs_f64());
        }
        EventKind::ExecutionFailed {
            state: name,
            error: Some(error),
            ..
        } => {
            if error.kind() == StepError::TIMEOUT {
                if let Some(s) = state(name) {
                    s.executions_timed_out.increment(1);
                }
            } else {
                counter!("fsm_executions_errored_total", "machine" => def.name,
                    "state" => *name, "error_kind" => error.kind().to_owned())
                .increment(1);
            }
            h.duration[2].record(e.at.as_secs_f64());
        }
        _ => {}
    }
}

/// An execution of `machine` started (a durable start is written before it is observed).
#[cfg(feature = "durable")]
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
