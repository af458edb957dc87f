//! The contract between the generated step loop and the executor.
//!
//! `#[derive(Fsm)]` generates, per machine, a loop that matches on the state and awaits the
//! handler of each step in turn (`Dispatch::run`): the same shape as a loop a person would
//! write by hand, so a step costs little more than the handler itself. Around each handler the
//! loop calls a [`Driver`], which keeps a copy of the state for retries and error routes,
//! builds the step's [`Context`], records the history and arms the step's timeout. When a step
//! fails, panics or times out, the loop stops and the executor decides what follows (a retry,
//! an error route or the end), then starts the loop again.

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use core::time::Duration;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::{Instant, Sleep};

use crate::executor::{Policy, Recorder};
use crate::{Context, EventKind, ExecutionId, Fsm, IdempotencyKey, StepError};

/// Runs a machine's steps with the handlers `H`: implemented by `#[derive(Fsm)]` for every `H`
/// that implements the machine's generated `Steps` trait.
///
/// Executors drive machines through this trait; users implement `Steps` and never this.
pub trait Dispatch<H>: Fsm + Send {
    /// Runs steps from this state until it reaches a terminal state (returned) or a step
    /// fails (its error returned; the state it failed in is in the driver). Generated code,
    /// driven by [`Executor`](crate::Executor): not for direct use.
    #[doc(hidden)]
    fn run<'a, 'b: 'a, K: Keep<Self>>(
        self,
        steps: &'a H,
        driver: &'a mut Driver<'b, Self>,
    ) -> impl Future<Output = Result<Self, StepError>> + Send + 'a;

    /// Routes a step that failed for good to the state its declaration names for the error
    /// (`#[fsm(catch(kind => State))]`), building that state's data with the handler the
    /// declaration requires. Gives the value back when no route matches.
    fn recover(self, steps: &H, error: &StepError) -> Result<(Self, usize), Self>;
}

/// Copies the state a step starts from. The executor's `M: Clone` reaches the generated loop
/// through this, so a machine whose data is not `Clone` still compiles (it just cannot run
/// on the executor).
#[doc(hidden)]
pub trait Keep<M> {
    /// A copy of `state`.
    fn keep(state: &M) -> M;
}

/// [`Keep`] by `Clone`.
pub(crate) struct Cloned;

impl<M: Clone> Keep<M> for Cloned {
    #[inline]
    fn keep(state: &M) -> M {
        state.clone()
    }
}

/// What the generated loop calls around each step. Not public API.
#[doc(hidden)]
pub struct Driver<'b, M> {
    /// A copy of the state of the step under way, for a retry or an error route.
    pub(crate) kept: Option<M>,
    pub(crate) id: ExecutionId,
    /// The position of the step under way in the execution (its idempotency key).
    pub(crate) step: u32,
    pub(crate) attempt: u32,
    /// Whether a step needs more than its context: a history, an observer, a time limit or
    /// a span. When not, the loop runs nothing else around the handlers.
    pub(crate) watched: bool,
    /// The state index of the step under way (kept up to date only when `watched`).
    pub(crate) index: usize,
    pub(crate) policies: &'b [Policy],
    pub(crate) rec: Recorder<'b>,
    pub(crate) deadline: &'b Deadline,
}

impl<M: Fsm> Driver<'_, M> {
    /// Keeps `state`, the copy of the state whose step starts now.
    #[inline]
    pub fn keep(&mut self, state: M) {
        self.kept = Some(state);
    }

    /// Starts an attempt of the step of state `index`: records it, arms its timeout and gives
    /// its context.
    #[inline(always)]
    pub fn begin(&mut self, index: usize) -> Context {
        if self.watched {
            self.watch_start(index);
        }
        Context {
            execution: self.id,
            attempt: self.attempt,
            idempotency_key: IdempotencyKey {
                execution: self.id,
                step: self.step,
            },
        }
    }

    /// The attempt's future as the executor polls it: in a `step` span with the `tracing`
    /// feature, as it is otherwise.
    #[inline]
    pub fn attempt<F: Future>(&self, step: F) -> impl Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        let step = tracing::Instrument::instrument(
            step,
            tracing::info_span!(
                "step",
                state = M::DEFINITION.states[self.index].name,
                attempt = self.attempt,
                execution = self.id.0
            ),
        );
        step
    }

    /// Ends the step under way, which succeeded by taking transition `transition`.
    #[inline(always)]
    pub fn done(&mut self, transition: usize) {
        if self.watched {
            self.watch_done(transition);
        }
        self.step += 1;
        self.attempt = 1;
        self.kept = None;
    }

    #[inline(never)]
    fn watch_start(&mut self, index: usize) {
        self.index = index;
        if self.rec.is_active() {
            let started = self.rec.start_attempt();
            let state = M::DEFINITION.states[index].name;
            let attempt = self.attempt;
            self.rec
                .event(started, || EventKind::StepStarted { state, attempt });
        }
        if let Some(limit) = self.policies.get(index).and_then(|p| p.timeout) {
            self.deadline.arm(limit);
        }
    }

    #[inline(never)]
    fn watch_done(&mut self, transition: usize) {
        self.deadline.disarm();
        if self.rec.is_active() {
            let ended = self.rec.stamp();
            let state = M::DEFINITION.states[self.index].name;
            let (attempt, duration) = (self.attempt, self.rec.attempt_duration(ended));
            self.rec.event(ended, || EventKind::StepSucceeded {
                state,
                attempt,
                duration,
            });
            self.rec.transition(ended, transition);
        }
    }
}

/// The time limit of the attempt under way, shared by the loop (which arms it) and [`Guard`]
/// (which enforces it): nanoseconds after `origin`, or `NONE`.
pub(crate) struct Deadline {
    origin: Option<Instant>,
    at: AtomicU64,
}

impl Deadline {
    const NONE: u64 = u64::MAX;

    /// A deadline for an execution; `timeouts` says whether any of its steps has a limit.
    #[inline]
    pub(crate) fn new(timeouts: bool) -> Self {
        Deadline {
            origin: timeouts.then(Instant::now),
            at: AtomicU64::new(Self::NONE),
        }
    }

    /// Clears the time limit of the attempt under way.
    pub(crate) fn disarm(&self) {
        if self.origin.is_some() {
            self.at.store(Self::NONE, Ordering::Relaxed);
        }
    }

    fn arm(&self, limit: Duration) {
        if let Some(origin) = self.origin {
            let at = origin.elapsed().saturating_add(limit).as_nanos();
            let at = u64::try_from(at)
                .unwrap_or(Self::NONE - 1)
                .min(Self::NONE - 1);
            self.at.store(at, Ordering::Relaxed);
        }
    }
}

/// How a run of the generated loop ended.
pub(crate) enum Stop<T> {
    /// It returned.
    Done(T),
    /// User code panicked while it ran.
    Panicked(Box<dyn Any + Send>),
    /// The attempt under way ran past its time limit and was abandoned.
    TimedOut,
}

pin_project_lite::pin_project! {
    /// Polls the generated loop, turning a panic into [`Stop::Panicked`] and an attempt past
    /// its deadline into [`Stop::TimedOut`].
    pub(crate) struct Guard<'d, F> {
        #[pin]
        run: F,
        deadline: &'d Deadline,
        armed: u64,
        // Boxed: most steps have no time limit, and the guard is moved on every run.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<'d, F> Guard<'d, F> {
    pub(crate) fn new(run: F, deadline: &'d Deadline) -> Self {
        Guard {
            run,
            deadline,
            armed: Deadline::NONE,
            sleep: None,
        }
    }
}

impl<F: Future> Future for Guard<'_, F> {
    type Output = Stop<F::Output>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match catch_unwind(AssertUnwindSafe(|| this.run.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => return Poll::Ready(Stop::Done(out)),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Stop::Panicked(payload)),
        }
        // The loop waits: on its step, and on that step's deadline if it has one.
        let at = this.deadline.at.load(Ordering::Relaxed);
        let Some(origin) = this.deadline.origin.filter(|_| at != Deadline::NONE) else {
            *this.sleep = None;
            return Poll::Pending;
        };
        let when = origin + Duration::from_nanos(at);
        let sleep = match this.sleep {
            Some(sleep) if *this.armed == at => sleep,
            Some(sleep) => {
                sleep.as_mut().reset(when);
                sleep
            }
            None => this.sleep.insert(Box::pin(tokio::time::sleep_until(when))),
        };
        *this.armed = at;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Stop::TimedOut),
            Poll::Pending => Poll::Pending,
        }
    }
}
