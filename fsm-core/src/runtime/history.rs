//! The ordered record of an execution, modelled on Step Functions' execution history.

use core::fmt;
use core::time::Duration;

use crate::StepError;

/// What happened, in order, during one execution.
///
/// Its `Display` is a readable table, one event per line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    events: Vec<HistoryEvent>,
}

/// One event of a [`History`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    /// When it happened, measured from the start of the execution.
    pub at: Duration,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`HistoryEvent`]. State and event names come from the machine's
/// [`Definition`](crate::Definition).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The execution began in `state`.
    ExecutionStarted {
        /// The state it began in.
        state: &'static str,
    },
    /// An attempt of `state`'s step began.
    StepStarted {
        /// The state whose step runs.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// An attempt of `state`'s step returned the next state.
    StepSucceeded {
        /// The state whose step ran.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// How long the attempt took.
        duration: Duration,
    },
    /// An attempt of `state`'s step returned an error or panicked.
    StepFailed {
        /// The state whose step ran.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// How long the attempt took.
        duration: Duration,
        /// The error; [`StepError::is_retryable`] tells whether it may be retried.
        error: StepError,
    },
    /// An attempt of `state`'s step ran past its timeout and was abandoned.
    StepTimedOut {
        /// The state whose step ran.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// The timeout it ran past.
        timeout: Duration,
    },
    /// Another attempt of `state`'s step will start after `delay`.
    RetryScheduled {
        /// The state whose step will run again.
        state: &'static str,
        /// The attempt that will start, from 2.
        attempt: u32,
        /// How long the executor waits before it.
        delay: Duration,
    },
    /// The machine moved along one of its transitions.
    Transition {
        /// The source state.
        from: &'static str,
        /// The event, or for a catch edge the error kind it matched.
        event: &'static str,
        /// The target state.
        to: &'static str,
        /// The transition's index in [`Definition::transitions`](crate::Definition::transitions).
        index: usize,
    },
    /// A durable execution was taken up again by a worker after the process that ran it
    /// stopped (its interrupted step runs again, with the same idempotency key).
    ExecutionResumed {
        /// The state it resumed in.
        state: &'static str,
        /// Whether the machine's definition changed since the execution last ran
        /// ([`Definition::fingerprint`](crate::Definition::fingerprint)).
        definition_changed: bool,
    },
    /// The step of a waiting state handed out its task token: the execution waits for it to
    /// be completed or failed.
    WaitStarted {
        /// The waiting state.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// How long it waits before the wait fails with a timeout, if it has a limit.
        timeout: Option<Duration>,
    },
    /// The task token of a wait was completed (the transition follows).
    WaitCompleted {
        /// The waiting state.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// Who answered, as they named themselves
        /// (`DurableClient::answering_as`), if they did.
        by: Option<String>,
        /// Whether an operator answered it by hand, without the token
        /// (`Operator::complete`).
        by_hand: bool,
    },
    /// The task token of a wait was failed by the outside world (the failure follows, as a
    /// step's: retried or routed by the waiting state's policy).
    WaitFailed {
        /// The waiting state.
        state: &'static str,
        /// The attempt, from 1.
        attempt: u32,
        /// Who answered, if they named themselves.
        by: Option<String>,
        /// Whether an operator failed it by hand, without the token (`Operator::fail`).
        by_hand: bool,
    },
    /// An operator redrove the execution, which had ended with an error or been cancelled:
    /// the step of the state it stopped in runs again, its attempts counted afresh, under a
    /// new idempotency key (`Operator::redrive`).
    ExecutionRedriven {
        /// The state it goes on from.
        state: &'static str,
        /// Who redrove it.
        by: Option<String>,
    },
    /// An operator cancelled the execution (`Operator::cancel`): it ended there, and a step
    /// that was running has its result discarded.
    ExecutionCancelled {
        /// The state it was in.
        state: &'static str,
        /// Who cancelled it.
        by: Option<String>,
    },
    /// A fanning-out state's step started its branches (Step Functions'
    /// `ParallelStateStarted`, `MapStateStarted`): `branches` executions of their own.
    FanOutStarted {
        /// The fanning-out state.
        state: &'static str,
        /// How many branches, or items.
        branches: u32,
    },
    /// A branch of a Parallel state began (`ParallelBranchStarted`), as an execution of its
    /// own. (A Map's items are not recorded one by one unless they fail.)
    BranchStarted {
        /// The fanning-out state.
        state: &'static str,
        /// The branch's name (`"item"` for a Map's items).
        branch: &'static str,
        /// The branch's position among the branches, or the item's among the items, from 0.
        position: u32,
        /// The branch's execution.
        execution: crate::ExecutionId,
    },
    /// A branch, or an item, ended (`MapIterationFailed`...): in a terminal state of its
    /// machine, or errored with `error`.
    BranchEnded {
        /// The fanning-out state.
        state: &'static str,
        /// The branch's name (`"item"` for a Map's items).
        branch: &'static str,
        /// The branch's or item's position, from 0.
        position: u32,
        /// The branch's execution.
        execution: crate::ExecutionId,
        /// The state of the branch's machine it ended in.
        end: &'static str,
        /// Whether it succeeded.
        succeeded: bool,
        /// The error it ended with, if a step failed for good.
        error: Option<StepError>,
    },
    /// A branch still running was cancelled: another failed and failed the state.
    BranchCancelled {
        /// The fanning-out state.
        state: &'static str,
        /// The branch's name.
        branch: &'static str,
        /// The branch's or item's position, from 0.
        position: u32,
        /// The branch's execution.
        execution: crate::ExecutionId,
    },
    /// A branch that had succeeded was compensated, because the state failed; `error` when
    /// its compensation failed.
    BranchCompensated {
        /// The fanning-out state.
        state: &'static str,
        /// The branch's name.
        branch: &'static str,
        /// The branch's or item's position, from 0.
        position: u32,
        /// The branch's execution.
        execution: crate::ExecutionId,
        /// Why the compensation failed, if it did.
        error: Option<StepError>,
    },
    /// Every branch ended and the join ran (Step Functions' `ParallelStateSucceeded`,
    /// `MapStateSucceeded`).
    FanOutJoined {
        /// The fanning-out state.
        state: &'static str,
        /// How many branches or items succeeded.
        succeeded: u32,
        /// How many failed (only a Map that tolerates failures joins with some).
        failed: u32,
    },
    /// The execution ended in a terminal state of kind success.
    ExecutionSucceeded {
        /// The terminal state.
        state: &'static str,
    },
    /// The execution ended in a terminal state of kind failure, or a step failed for good
    /// with no route for its error (then `error` says why).
    ExecutionFailed {
        /// The state it ended in.
        state: &'static str,
        /// The attempts of the failed step, when a step failed for good.
        attempts: u32,
        /// The error, when a step failed for good.
        error: Option<StepError>,
    },
}

impl History {
    /// The most events a history holds unless the executor is told otherwise
    /// (`ExecutorBuilder::history_limit`, feature `runtime`): Step
    /// Functions' limit.
    pub const DEFAULT_LIMIT: usize = 25_000;

    /// The events, in order.
    pub fn events(&self) -> &[HistoryEvent] {
        &self.events
    }

    /// How many events there are.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded (recording was switched off).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The transitions taken, in order, as indices into
    /// [`Definition::transitions`](crate::Definition::transitions).
    pub fn transitions(&self) -> impl Iterator<Item = usize> + '_ {
        self.events.iter().filter_map(|e| match e.kind {
            EventKind::Transition { index, .. } => Some(index),
            _ => None,
        })
    }

    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn with_capacity(n: usize) -> Self {
        History {
            events: Vec::with_capacity(n),
        }
    }

    /// The events, leaving this history empty.
    #[cfg(feature = "durable")]
    pub(crate) fn take(&mut self) -> Vec<HistoryEvent> {
        std::mem::take(&mut self.events)
    }

    /// A history of `events`.
    #[cfg(feature = "durable")]
    pub(crate) fn from_events(events: Vec<HistoryEvent>) -> Self {
        History { events }
    }

    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn push(&mut self, event: HistoryEvent) {
        self.events.push(event);
    }
}

impl EventKind {
    /// A short name for the event, as in the history table: `"step started"`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { .. } => "execution started",
            EventKind::StepStarted { .. } => "step started",
            EventKind::StepSucceeded { .. } => "step succeeded",
            EventKind::StepFailed { .. } => "step failed",
            EventKind::StepTimedOut { .. } => "step timed out",
            EventKind::RetryScheduled { .. } => "retry scheduled",
            EventKind::Transition { .. } => "transition",
            EventKind::ExecutionResumed { .. } => "execution resumed",
            EventKind::WaitStarted { .. } => "wait started",
            EventKind::WaitCompleted { .. } => "wait completed",
            EventKind::WaitFailed { .. } => "wait failed",
            EventKind::ExecutionRedriven { .. } => "execution redriven",
            EventKind::ExecutionCancelled { .. } => "execution cancelled",
            EventKind::ExecutionSucceeded { .. } => "execution succeeded",
            EventKind::ExecutionFailed { .. } => "execution failed",
            EventKind::FanOutStarted { .. } => "fan-out started",
            EventKind::BranchStarted { .. } => "branch started",
            EventKind::BranchEnded {
                succeeded: true, ..
            } => "branch succeeded",
            EventKind::BranchEnded { .. } => "branch failed",
            EventKind::BranchCancelled { .. } => "branch cancelled",
            EventKind::BranchCompensated { .. } => "branch compensated",
            EventKind::FanOutJoined { .. } => "fan-out joined",
        }
    }

    /// The state the event is about (for a transition, its source).
    pub fn state(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { state }
            | EventKind::StepStarted { state, .. }
            | EventKind::StepSucceeded { state, .. }
            | EventKind::StepFailed { state, .. }
            | EventKind::StepTimedOut { state, .. }
            | EventKind::RetryScheduled { state, .. }
            | EventKind::ExecutionSucceeded { state }
            | EventKind::ExecutionResumed { state, .. }
            | EventKind::WaitStarted { state, .. }
            | EventKind::WaitCompleted { state, .. }
            | EventKind::WaitFailed { state, .. }
            | EventKind::ExecutionRedriven { state, .. }
            | EventKind::ExecutionCancelled { state, .. }
            | EventKind::ExecutionFailed { state, .. }
            | EventKind::FanOutStarted { state, .. }
            | EventKind::BranchStarted { state, .. }
            | EventKind::BranchEnded { state, .. }
            | EventKind::BranchCancelled { state, .. }
            | EventKind::BranchCompensated { state, .. }
            | EventKind::FanOutJoined { state, .. } => state,
            EventKind::Transition { from, .. } => from,
        }
    }
}

impl fmt::Display for EventKind {
    /// The event's details, as in the history table's last column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.detail(f)
    }
}

impl EventKind {
    /// The event's details.
    fn detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = Shown;
        match self {
            EventKind::ExecutionStarted { .. } | EventKind::ExecutionSucceeded { .. } => Ok(()),
            EventKind::StepStarted { attempt, .. } => write!(f, "attempt {attempt}"),
            EventKind::StepSucceeded {
                attempt, duration, ..
            } => {
                write!(f, "attempt {attempt}, took {}", ms(*duration))
            }
            EventKind::StepFailed {
                attempt,
                duration,
                error,
                ..
            } => {
                write!(f, "attempt {attempt}, took {}: {error}", ms(*duration))
            }
            EventKind::StepTimedOut {
                attempt, timeout, ..
            } => {
                write!(f, "attempt {attempt}, past {}", ms(*timeout))
            }
            EventKind::RetryScheduled { attempt, delay, .. } => {
                write!(f, "attempt {attempt} in {}", ms(*delay))
            }
            EventKind::Transition { event, to, .. } => write!(f, "--{event}--> {to}"),
            EventKind::ExecutionResumed {
                definition_changed: true,
                ..
            } => f.write_str("under a changed definition"),
            EventKind::ExecutionResumed { .. } => Ok(()),
            EventKind::WaitStarted {
                attempt,
                timeout: Some(timeout),
                ..
            } => write!(f, "attempt {attempt}, for up to {}", ms(*timeout)),
            EventKind::WaitStarted { attempt, .. } => write!(f, "attempt {attempt}"),
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
                write!(f, "attempt {attempt}")?;
                match (by, by_hand) {
                    (Some(by), false) => write!(f, ", answered by {by}"),
                    (Some(by), true) => write!(f, ", answered by hand by {by}"),
                    (None, true) => f.write_str(", answered by hand"),
                    (None, false) => Ok(()),
                }
            }
            EventKind::ExecutionRedriven { by: Some(by), .. }
            | EventKind::ExecutionCancelled { by: Some(by), .. } => write!(f, "by {by}"),
            EventKind::ExecutionRedriven { by: None, .. }
            | EventKind::ExecutionCancelled { by: None, .. } => Ok(()),
            EventKind::ExecutionFailed {
                attempts,
                error: Some(error),
                ..
            } => {
                write!(f, "after {attempts} attempt(s): {error}")
            }
            EventKind::ExecutionFailed { error: None, .. } => write!(f, "ended in a failure state"),
            EventKind::FanOutStarted { branches, .. } => write!(f, "{branches} branch(es)"),
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
            } => write!(f, "{branch} #{position}, execution {execution}"),
            EventKind::BranchEnded {
                branch,
                position,
                execution,
                end,
                error,
                ..
            } => {
                write!(f, "{branch} #{position}, execution {execution}, in {end}")?;
                match error {
                    Some(error) => write!(f, ": {error}"),
                    None => Ok(()),
                }
            }
            EventKind::BranchCompensated {
                branch,
                position,
                execution,
                error,
                ..
            } => {
                write!(f, "{branch} #{position}, execution {execution}")?;
                match error {
                    Some(error) => write!(f, ": compensation failed: {error}"),
                    None => Ok(()),
                }
            }
            EventKind::FanOutJoined {
                succeeded, failed, ..
            } => write!(f, "{succeeded} succeeded, {failed} failed"),
        }
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .events
            .iter()
            .map(|e| e.kind.state().len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:>10}  {:<19}  {:<width$}  detail",
            "at", "event", "state"
        )?;
        let mut previous = Duration::ZERO;
        for e in &self.events {
            let mut detail = e.kind.to_string();
            if let EventKind::ExecutionResumed { .. } = e.kind {
                // What happened between the last event and this one is not known: the worker
                // stopped (killed, shut down, its lease ran out) and another took over.
                let gap = Shown(e.at.saturating_sub(previous));
                let sep = if detail.is_empty() { "" } else { "; " };
                detail = format!("{detail}{sep}stopped for {gap} before");
            }
            let line = format!(
                "{:>10}  {:<19}  {:<width$}  {detail}",
                Shown(e.at).to_string(),
                e.kind.name(),
                e.kind.state(),
            );
            writeln!(f, "{}", line.trim_end())?;
            previous = e.at;
        }
        Ok(())
    }
}

/// A duration as a person reads it: `1.500ms`, `2.045s`, `3m12.500s`, `2h05m00s`; never
/// wider than 10 characters below 1,000 hours, so that the history's columns stay in line.
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(d) = *self;
        let secs = d.as_secs();
        let millis = d.subsec_millis();
        match secs {
            0 => write!(f, "{:.3}ms", d.as_secs_f64() * 1000.0),
            1..60 => write!(f, "{secs}.{millis:03}s"),
            60..3600 => write!(f, "{}m{:02}.{millis:03}s", secs / 60, secs % 60),
            _ => write!(f, "{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shown;
    use core::time::Duration;

    #[test]
    fn durations_are_shown_to_the_precision_they_are_known() {
        let shown = |d: Duration| Shown(d).to_string();
        assert_eq!(shown(Duration::from_micros(1_500)), "1.500ms");
        assert_eq!(shown(Duration::from_micros(513_042)), "513.042ms");
        assert_eq!(shown(Duration::from_millis(2_045)), "2.045s");
        assert_eq!(shown(Duration::from_millis(20_000)), "20.000s");
        assert_eq!(shown(Duration::from_millis(192_500)), "3m12.500s");
        assert_eq!(shown(Duration::from_secs(7_500)), "2h05m00s");
        assert_eq!(shown(Duration::from_secs(999 * 3600 + 3599)), "999h59m59s");
    }
}
