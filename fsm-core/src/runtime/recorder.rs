//! The history an execution records, and who sees it as it happens: the recorder the step
//! loop (`driver`) writes to, and the observer the user gives the executor. Below both the
//! driver and the executor, which configure it (`Recording`) and read it back.

use core::time::Duration;
use std::sync::Arc;

use tokio::time::Instant;

use crate::{EventKind, ExecutionId, History, HistoryEvent};

/// A function that sees every history event of every execution as it happens.
pub type Observer = Arc<dyn Fn(ExecutionId, &HistoryEvent) + Send + Sync>;

/// What an executor records: whether it keeps histories, who observes them, and how many
/// events a history may hold.
#[derive(Clone, Copy)]
pub(crate) struct Recording<'a> {
    pub(crate) history: bool,
    pub(crate) observer: Option<&'a Observer>,
    pub(crate) limit: usize,
}

/// Records history events and hands them to the observer. With neither, it does nothing,
/// takes no timestamps and holds nothing (it is part of every execution's future, which is
/// moved when the execution starts).
pub(crate) struct Recorder<'a> {
    active: Option<Box<Active<'a>>>,
}

struct Active<'a> {
    id: ExecutionId,
    start: Instant,
    history: Option<History>,
    observer: Option<&'a Observer>,
    definition: &'static crate::Definition,
    /// The last timestamp taken, reused by events that happen at the same moment (a step's
    /// end and the transition it leads to).
    last: Duration,
    /// When the attempt under way started.
    attempt_started: Duration,
    /// Set while the observer runs: a panic then is the observer's, not a step's.
    in_observer: bool,
    /// The most events the history holds.
    limit: usize,
    /// Events already handed out by [`Recorder::drain`] (a durable execution's stored
    /// history): they count towards the limit.
    flushed: usize,
}

impl<'a> Recorder<'a> {
    /// A recorder that records nothing (the driver's own tests, the ASL step adapter).
    #[cfg(any(test, feature = "asl"))]
    pub(crate) fn inactive() -> Self {
        Recorder { active: None }
    }

    #[inline]
    pub(crate) fn new(
        id: ExecutionId,
        recording: Recording<'a>,
        definition: &'static crate::Definition,
    ) -> Self {
        let active = recording.history || recording.observer.is_some();
        Recorder {
            active: active.then(|| {
                let history = recording.history;
                Recorder::active(id, recording, definition, Instant::now(), 0, history)
            }),
        }
    }

    /// A recorder that always records, for a durable execution: times count from `origin`
    /// (when the execution was started), and `flushed` events are already stored.
    #[cfg(feature = "durable")]
    pub(crate) fn durable(
        id: ExecutionId,
        recording: Recording<'a>,
        definition: &'static crate::Definition,
        origin: Instant,
        flushed: usize,
    ) -> Self {
        Recorder {
            active: Some(Recorder::active(
                id, recording, definition, origin, flushed, true,
            )),
        }
    }

    fn active(
        id: ExecutionId,
        recording: Recording<'a>,
        definition: &'static crate::Definition,
        start: Instant,
        flushed: usize,
        history: bool,
    ) -> Box<Active<'a>> {
        Box::new(Active {
            id,
            start,
            history: history.then(|| History::with_capacity(16)),
            observer: recording.observer,
            definition,
            last: Duration::ZERO,
            attempt_started: Duration::ZERO,
            in_observer: false,
            limit: recording.limit,
            flushed,
        })
    }

    /// The events recorded since the last drain (a durable execution stores them at each
    /// checkpoint).
    #[cfg(feature = "durable")]
    pub(crate) fn drain(&mut self) -> Vec<HistoryEvent> {
        match self.active.as_mut() {
            Some(a) => {
                let events = a.history.as_mut().map(History::take).unwrap_or_default();
                a.flushed += events.len();
                events
            }
            None => Vec::new(),
        }
    }

    /// What this recorder records: what the branches of a fan-out record too.
    pub(crate) fn recording(&self) -> Recording<'a> {
        match &self.active {
            Some(a) => Recording {
                history: a.history.is_some(),
                observer: a.observer,
                limit: a.limit,
            },
            None => Recording {
                history: false,
                observer: None,
                limit: usize::MAX,
            },
        }
    }

    /// Whether anything is recorded or observed.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the history has reached its limit.
    pub(crate) fn is_full(&self) -> bool {
        self.active
            .as_ref()
            .and_then(|a| Some(a.history.as_ref()?.len() + a.flushed >= a.limit))
            .unwrap_or(false)
    }

    /// Whether the observer was running (when a panic unwound).
    pub(crate) fn in_observer(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.in_observer)
    }

    /// The time since the execution started, if anything is recorded.
    #[inline]
    pub(crate) fn stamp(&mut self) -> Duration {
        match &mut self.active {
            Some(a) => {
                a.last = a.start.elapsed();
                a.last
            }
            None => Duration::ZERO,
        }
    }

    /// Stamps the start of an attempt.
    pub(crate) fn start_attempt(&mut self) -> Duration {
        let at = self.stamp();
        if let Some(a) = &mut self.active {
            a.attempt_started = at;
        }
        at
    }

    /// How long the attempt under way has taken at `ended`.
    pub(crate) fn attempt_duration(&self, ended: Duration) -> Duration {
        self.active
            .as_ref()
            .map_or(Duration::ZERO, |a| ended.saturating_sub(a.attempt_started))
    }

    /// Records the event `kind` builds, stamped now.
    pub(crate) fn event_now(&mut self, kind: impl FnOnce() -> EventKind) {
        let at = self.stamp();
        self.event(at, kind);
    }

    #[inline]
    pub(crate) fn event(&mut self, at: Duration, kind: impl FnOnce() -> EventKind) {
        let Some(a) = &mut self.active else {
            return;
        };
        let event = HistoryEvent { at, kind: kind() };
        if let Some(observer) = a.observer {
            a.in_observer = true;
            observer(a.id, &event);
            a.in_observer = false;
        }
        if let Some(history) = &mut a.history {
            // Past the limit only the event that ends the execution is kept.
            let ends = matches!(
                event.kind,
                EventKind::ExecutionFailed { .. } | EventKind::ExecutionSucceeded { .. }
            );
            if history.len() + a.flushed < a.limit || ends {
                history.push(event);
            }
        }
    }

    pub(crate) fn transition(&mut self, at: Duration, index: usize) {
        let Some(def) = self.active.as_ref().map(|a| a.definition) else {
            return;
        };
        self.event(at, || {
            let t = &def.transitions[index];
            EventKind::Transition {
                from: def.states[t.from].name,
                event: t.event,
                to: def.states[t.to].name,
                index,
            }
        });
    }

    /// The history recorded (empty if none was).
    pub(crate) fn finish(&mut self) -> History {
        self.active
            .as_mut()
            .and_then(|a| a.history.take())
            .unwrap_or_default()
    }
}
