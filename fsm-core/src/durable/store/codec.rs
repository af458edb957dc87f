//! History events to stored rows and back: the kind and state as text, the rest as JSON a
//! person can read (`{"attempt":2,"delay_ms":200.0}`).

use core::time::Duration;

use serde_json::{json, Value};

use super::StoredEvent;
use crate::{Definition, EventKind, HistoryEvent, StepError};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A step error as the row's `error` column shows it, `kind: message`, storable by every
/// store: a NUL byte (text from a C library, a binary body), which PostgreSQL's text cannot
/// hold, is written `\0`. (Everything else the user's code hands a store is JSON, whose
/// encoder escapes every control character, or a name from the derive.)
pub(crate) fn error_text(e: &StepError) -> String {
    format!("{}: {}", e.kind(), e.message()).replace('\0', "\\0")
}

/// An error as JSON: `{"kind": ..., "message": ..., "retryable": ...}`.
pub(crate) fn error_json(e: &StepError) -> Value {
    json!({ "kind": e.kind(), "message": e.message(), "retryable": e.is_retryable() })
}

/// The error an [`error_json`] value holds.
pub(crate) fn error_from(v: &Value) -> Option<StepError> {
    let kind = v.get("kind")?.as_str()?.to_owned();
    let message = v.get("message")?.as_str()?;
    Some(if v.get("retryable")?.as_bool()? {
        StepError::retryable(kind, message)
    } else {
        StepError::fatal(kind, message)
    })
}

/// Who answered a wait, from a token's result (`{"by": ..., "by_hand": ...}`), and whether
/// they did by hand.
pub(crate) fn answered_by(result: &Value) -> (Option<String>, bool) {
    let by = result.get("by").and_then(Value::as_str).map(str::to_owned);
    let by_hand = result.get("by_hand").and_then(Value::as_bool) == Some(true);
    (by, by_hand)
}

/// The next event of `row`, of `kind` with `detail`, at `now`: written without the machine's
/// types (an operator's `execution redriven` or `execution cancelled`, an execution set aside).
pub(crate) fn row_event(
    row: &super::ExecutionRecord,
    kind: &str,
    detail: Value,
    now: super::Millis,
) -> StoredEvent {
    StoredEvent {
        seq: row.events,
        at_micros: now.saturating_sub(row.created_at).saturating_mul(1000),
        kind: kind.to_owned(),
        state: row.state_name.clone(),
        detail: detail.to_string(),
    }
}

/// The event that ends an execution set aside with `error` (its data could not be read):
/// `execution failed`.
pub(crate) fn set_aside_event(
    row: &super::ExecutionRecord,
    error: &StepError,
    now: super::Millis,
) -> StoredEvent {
    let detail = json!({ "attempts": row.attempt, "error": error_json(error) });
    row_event(row, "execution failed", detail, now)
}

/// The rows of `events`, numbered from `first`.
pub(crate) fn encode_all(events: &[HistoryEvent], first: u32) -> Vec<StoredEvent> {
    (events.iter().enumerate())
        .map(|(i, e)| encode(e, first + i as u32))
        .collect()
}

/// The row of `event`, the `seq`th of its execution.
pub(crate) fn encode(event: &HistoryEvent, seq: u32) -> StoredEvent {
    let detail = match &event.kind {
        EventKind::ExecutionStarted { .. } | EventKind::ExecutionSucceeded { .. } => Value::Null,
        EventKind::StepStarted { attempt, .. } => json!({ "attempt": attempt }),
        EventKind::WaitCompleted {
            attempt,
            by,
            by_hand,
            ..
        }
        | EventKind::WaitFailed {
            attempt,
            by,
            by_hand,
            ..
        } => {
            if *by_hand {
                json!({ "attempt": attempt, "by": by, "by_hand": true })
            } else {
                json!({ "attempt": attempt, "by": by })
            }
        }
        EventKind::ExecutionRedriven { by, .. } | EventKind::ExecutionCancelled { by, .. } => {
            json!({ "by": by })
        }
        EventKind::StepSucceeded {
            attempt, duration, ..
        } => json!({ "attempt": attempt, "duration_ms": ms(*duration) }),
        EventKind::StepFailed {
            attempt,
            duration,
            error,
            ..
        } => {
            json!({ "attempt": attempt, "duration_ms": ms(*duration), "error": error_json(error) })
        }
        EventKind::StepTimedOut {
            attempt, timeout, ..
        } => json!({ "attempt": attempt, "timeout_ms": ms(*timeout) }),
        EventKind::RetryScheduled { attempt, delay, .. } => {
            json!({ "attempt": attempt, "delay_ms": ms(*delay) })
        }
        EventKind::Transition {
            event, to, index, ..
        } => json!({ "event": event, "to": to, "index": index }),
        EventKind::ExecutionFailed {
            attempts, error, ..
        } => json!({ "attempts": attempts, "error": error.as_ref().map(error_json) }),
        EventKind::ExecutionResumed {
            definition_changed, ..
        } => json!({ "definition_changed": definition_changed }),
        EventKind::WaitStarted {
            attempt, timeout, ..
        } => json!({ "attempt": attempt, "timeout_ms": timeout.map(ms) }),
        EventKind::FanOutStarted { branches, .. } => json!({ "branches": branches }),
        EventKind::BranchStarted {
            branch,
            position,
            execution,
            ..
        }
        | EventKind::BranchCancelled {
            branch,
            position,
            execution,
            ..
        } => json!({ "branch": branch, "position": position, "execution": execution.to_string() }),
        EventKind::BranchEnded {
            branch,
            position,
            execution,
            end,
            succeeded,
            error,
            ..
        } => json!({
            "branch": branch, "position": position, "execution": execution.to_string(),
            "end": end, "succeeded": succeeded, "error": error.as_ref().map(error_json),
        }),
        EventKind::BranchCompensated {
            branch,
            position,
            execution,
            error,
            ..
        } => json!({
            "branch": branch, "position": position, "execution": execution.to_string(),
            "error": error.as_ref().map(error_json),
        }),
        EventKind::FanOutJoined {
            succeeded, failed, ..
        } => json!({ "succeeded": succeeded, "failed": failed }),
    };
    StoredEvent {
        seq,
        at_micros: u64::try_from(event.at.as_micros()).unwrap_or(u64::MAX),
        kind: event.kind.name().to_owned(),
        state: event.kind.state().to_owned(),
        detail: detail.to_string(),
    }
}

/// The event a row holds, with its names taken from `def`; `Err` says what does not fit
/// (a state or transition the definition no longer has, or a malformed detail).
pub(crate) fn decode(def: &'static Definition, row: &StoredEvent) -> Result<HistoryEvent, String> {
    let bad = |what: &str| format!("event {} ({}): {what}", row.seq, row.kind);
    let detail: Value = serde_json::from_str(&row.detail).map_err(|e| bad(&e.to_string()))?;
    let info = def
        .state_index(&row.state)
        .map(|i| &def.states[i])
        .ok_or_else(|| bad(&format!("no state `{}` in `{}`", row.state, def.name)))?;
    let state = info.name;
    let num = |key: &str| detail.get(key).and_then(Value::as_u64);
    let attempt = || {
        num("attempt")
            .and_then(|a| u32::try_from(a).ok())
            .ok_or_else(|| bad("no attempt"))
    };
    let millis = |key: &str| {
        detail
            .get(key)
            .and_then(Value::as_f64)
            .and_then(|v| Duration::try_from_secs_f64(v / 1000.0).ok())
            .ok_or_else(|| bad(&format!("no {key}")))
    };
    let by = || detail.get("by").and_then(Value::as_str).map(str::to_owned);
    let by_hand = detail.get("by_hand").and_then(Value::as_bool) == Some(true);
    let error = || {
        detail
            .get("error")
            .and_then(error_from)
            .ok_or_else(|| bad("no error"))
    };
    let number = |key: &str| {
        num(key)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(&format!("no {key}")))
    };
    let execution = || {
        detail
            .get("execution")
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<crate::ExecutionId>().ok())
            .ok_or_else(|| bad("no branch execution"))
    };
    // The branch's name and machine, as the state's fan-out declares them.
    let branch = || {
        let fan = info
            .fan_out
            .ok_or_else(|| bad(&format!("`{state}` does not fan out")))?;
        let name = detail.get("branch").and_then(Value::as_str).unwrap_or("");
        fan.branches
            .iter()
            .find(|b| b.name == name)
            .or(match fan.kind {
                crate::FanOutKind::Map { .. } => fan.branches.first(),
                crate::FanOutKind::Parallel => None,
            })
            .map(|b| (b.name, b.definition))
            .ok_or_else(|| bad(&format!("`{state}` has no branch `{name}`")))
    };
    let kind = match row.kind.as_str() {
        "execution started" => EventKind::ExecutionStarted { state },
        "execution succeeded" => EventKind::ExecutionSucceeded { state },
        "step started" => EventKind::StepStarted {
            state,
            attempt: attempt()?,
        },
        "wait completed" => EventKind::WaitCompleted {
            state,
            attempt: attempt()?,
            by: by(),
            by_hand,
        },
        "wait failed" => EventKind::WaitFailed {
            state,
            attempt: attempt()?,
            by: by(),
            by_hand,
        },
        "execution redriven" => EventKind::ExecutionRedriven { state, by: by() },
        "execution cancelled" => EventKind::ExecutionCancelled { state, by: by() },
        "step succeeded" => EventKind::StepSucceeded {
            state,
            attempt: attempt()?,
            duration: millis("duration_ms")?,
        },
        "step failed" => EventKind::StepFailed {
            state,
            attempt: attempt()?,
            duration: millis("duration_ms")?,
            error: error()?,
        },
        "step timed out" => EventKind::StepTimedOut {
            state,
            attempt: attempt()?,
            timeout: millis("timeout_ms")?,
        },
        "retry scheduled" => EventKind::RetryScheduled {
            state,
            attempt: attempt()?,
            delay: millis("delay_ms")?,
        },
        "transition" => {
            let index = num("index").ok_or_else(|| bad("no index"))? as usize;
            let t = def
                .transitions
                .get(index)
                .filter(|t| {
                    def.states[t.from].name == state
                        && detail.get("event").and_then(Value::as_str) == Some(t.event)
                        && detail.get("to").and_then(Value::as_str) == Some(def.states[t.to].name)
                })
                .ok_or_else(|| bad(&format!("`{}` has no such transition", def.name)))?;
            EventKind::Transition {
                from: state,
                event: t.event,
                to: def.states[t.to].name,
                index,
            }
        }
        "execution failed" => EventKind::ExecutionFailed {
            state,
            attempts: num("attempts")
                .and_then(|a| u32::try_from(a).ok())
                .ok_or_else(|| bad("no attempts"))?,
            error: match detail.get("error") {
                None | Some(Value::Null) => None,
                Some(_) => Some(error()?),
            },
        },
        "execution resumed" => EventKind::ExecutionResumed {
            state,
            definition_changed: detail
                .get("definition_changed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "wait started" => EventKind::WaitStarted {
            state,
            attempt: attempt()?,
            timeout: match detail.get("timeout_ms") {
                None | Some(Value::Null) => None,
                Some(_) => Some(millis("timeout_ms")?),
            },
        },
        "fan-out started" => EventKind::FanOutStarted {
            state,
            branches: number("branches")?,
        },
        "branch started" => EventKind::BranchStarted {
            state,
            branch: branch()?.0,
            position: number("position")?,
            execution: execution()?,
        },
        "branch cancelled" => EventKind::BranchCancelled {
            state,
            branch: branch()?.0,
            position: number("position")?,
            execution: execution()?,
        },
        "branch succeeded" | "branch failed" => {
            let (branch, machine) = branch()?;
            let end = detail
                .get("end")
                .and_then(Value::as_str)
                .and_then(|end| machine.state_index(end).map(|i| machine.states[i].name))
                .ok_or_else(|| bad(&format!("no end state of `{}`", machine.name)))?;
            EventKind::BranchEnded {
                state,
                branch,
                position: number("position")?,
                execution: execution()?,
                end,
                succeeded: row.kind == "branch succeeded",
                error: match detail.get("error") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(error()?),
                },
            }
        }
        "branch compensated" => EventKind::BranchCompensated {
            state,
            branch: branch()?.0,
            position: number("position")?,
            execution: execution()?,
            error: match detail.get("error") {
                None | Some(Value::Null) => None,
                Some(_) => Some(error()?),
            },
        },
        "fan-out joined" => EventKind::FanOutJoined {
            state,
            succeeded: number("succeeded")?,
            failed: number("failed")?,
        },
        other => return Err(bad(&format!("unknown event kind `{other}`"))),
    };
    Ok(HistoryEvent {
        at: Duration::from_micros(row.at_micros),
        kind,
    })
}
