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
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use tokio::time::{Instant, Sleep};

use crate::runtime::policies::Policy;
use crate::runtime::recorder::Recorder;
use crate::runtime::waits::Waits;
use crate::{Context, EventKind, ExecutionId, Fsm, StepError, TaskToken};

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

    /// The step adapter of the machine named `machine` that this one runs as a branch, at
    /// any depth (`None`: no such branch machine). Generated for machines that fan out: the
    /// adapter of an exported machine runs its branches' Tasks through it.
    #[doc(hidden)]
    fn branch_task(machine: &str) -> Option<crate::runtime::fan_out::BranchTask<H>> {
        let _ = machine;
        None
    }
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
// `repr(C)`, with `attempt` away from `step`: the loop writes both after each step (two
// 4-byte stores) and reads both into the next step's `Context`; side by side, the compiler
// reads them with one 8-byte load, which the processor cannot forward from two stores, and
// every step stalls (measured: 20 steps in 125 ns instead of 92).
#[repr(C)]
pub struct Driver<'b, M> {
    /// A copy of the state of the step under way, for a retry or an error route.
    pub(crate) kept: Option<M>,
    pub(crate) id: ExecutionId,
    /// The position of the step under way in the execution (its idempotency key).
    pub(crate) step: u32,
    /// Whether a step needs more than its context: a history, an observer, a time limit or
    /// a span. When not, the loop runs nothing else around the handlers.
    pub(crate) watched: bool,
    /// Set while the machine's `Clone` copies the state before a step.
    pub(crate) copying: bool,
    /// What the attempt under way must check besides its step ([`Attempt`]'s flags).
    pub(crate) checks: u8,
    /// The state index of the step under way (kept up to date only when `watched`).
    pub(crate) index: usize,
    /// The attempt of the step under way, from 1.
    pub(crate) attempt: u32,
    pub(crate) policies: &'b [Policy],
    /// What only durable executions and waiting states need (see [`Cold`]).
    pub(crate) cold: Option<Box<Cold<'b>>>,
    /// Where an in-memory executor keeps the tokens its executions hand out.
    pub(crate) waits: Option<&'b Waits<M>>,
    pub(crate) rec: Recorder<'b>,
    pub(crate) deadline: &'b Deadline,
}

/// An in-memory execution's tokens are forgotten when it ends: when its driver goes.
impl<M> Drop for Driver<'_, M> {
    fn drop(&mut self) {
        if let Some(waits) = self.waits {
            waits.forget(self.id);
        }
    }
}

/// What the driver needs only for durable executions and waiting states: out of line, so
/// that an execution that uses neither carries one pointer for it (the driver is part of
/// every execution's future).
#[derive(Default)]
pub(crate) struct Cold<'b> {
    /// Whether the loop stops before each step but its first (a durable execution
    /// checkpoints between steps).
    pub(crate) pause: bool,
    /// Whether this run of the loop has begun a step.
    pub(crate) began: bool,
    /// Whether the loop halted to pause (not because the history is full): the attempt
    /// stops the same way for both, so that its poll, inlined into every arm of the
    /// generated loop, has no branch of its own for pauses.
    pub(crate) paused: bool,
    /// The token the next waiting step hands out, when the executor made it beforehand (a
    /// durable executor stores it before the step runs).
    pub(crate) token: Option<TaskToken>,
    /// The secret of the token handed out by the step under way.
    pub(crate) handed_out: Option<u128>,
    /// Where a durable execution's fan-outs keep their branches (as executions of their
    /// own, in the parent's store).
    #[cfg(feature = "durable")]
    pub(crate) children: Option<&'b dyn crate::durable::branches::Children>,
    #[cfg(not(feature = "durable"))]
    pub(crate) children: core::marker::PhantomData<&'b ()>,
    /// What the step adapter asks of a fan-out (an exported machine's Parallel or Map
    /// state runs its branches as Step Functions states, not here). A reference: what it
    /// holds would make the cold part's drop, inlined in every execution's, larger.
    #[cfg(feature = "asl")]
    pub(crate) asl: Option<&'b std::sync::Mutex<Option<crate::views::asl::AslFanOut>>>,
}

/// Why the attempt under way was stopped by the executor rather than by its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: the step's own result stands.
    None = 0,
    /// The step returned after its time limit: its result is discarded, as a timeout.
    Late = 1,
    /// The step of a waiting state handed out its token: the execution waits for it.
    Waiting = 4,
    /// The execution's history is full, or it has taken its last step number (4,294,967,295
    /// steps): it ends before this attempt runs.
    Halted = 2,
}

impl<'b, M> Driver<'b, M> {
    /// A driver that pauses before each step but the first of a run, for whoever saves the
    /// state between steps (a durable execution, a durable branch) or runs one step at a time
    /// (the step adapter): at `step` and `attempt` of execution `id`, with what `cold` says.
    #[cfg(any(feature = "durable", feature = "asl"))]
    pub(crate) fn stepwise(
        id: ExecutionId,
        (step, attempt): (u32, u32),
        policies: &'b [Policy],
        cold: Cold<'b>,
        rec: Recorder<'b>,
        deadline: &'b Deadline,
    ) -> Self {
        Driver {
            kept: None,
            id,
            step,
            attempt,
            watched: true,
            copying: false,
            checks: 0,
            index: 0,
            policies,
            cold: Some(Box::new(Cold {
                pause: true,
                ..cold
            })),
            waits: None,
            rec,
            deadline,
        }
    }
}

impl<'b, M: Fsm> Driver<'b, M> {
    /// Keeps `state`, whose step starts now, and gives the step a copy of it. The state is
    /// kept before it is copied: if the machine's `Clone` panics, the execution still has it
    /// (and `copying` says whose panic it was).
    #[inline]
    pub fn keep<K: Keep<M>>(&mut self, state: M) -> M {
        self.copying = true;
        let copy = K::keep(self.kept.insert(state));
        self.copying = false;
        copy
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
            step: self.step,
        }
    }

    /// The attempt's future as the executor polls it: in a `step` span with the `tracing`
    /// feature; not polled at all when the history is full; its result discarded as a timeout
    /// when it arrives after the step's time limit (a step that blocks its thread cannot be
    /// interrupted, but what it returns late does not count).
    #[inline]
    pub fn attempt<T, F: Future<Output = Result<T, StepError>>>(
        &self,
        step: F,
    ) -> Attempt<'b, Traced<F>> {
        #[cfg(feature = "tracing")]
        let step = tracing::Instrument::instrument(
            step,
            tracing::info_span!(
                "step",
                state = M::DEFINITION.states[self.index].name,
                attempt = self.attempt,
                execution = %self.id
            ),
        );
        // YIELD is 1: one test and one flag, no branch. (The last step number halts through
        // `checks`, set when the execution reaches it: see `Driver::advance`.)
        let yields = u8::from(self.step % YIELD_EVERY == YIELD_EVERY - 1);
        Attempt {
            step,
            limits: self.deadline,
            checks: self.checks | yields,
        }
    }

    /// The task token the step of a waiting state hands out: registered before the step
    /// runs, so that it can be answered at once. Fails (retryable) only if the operating
    /// system has no randomness to give.
    pub fn token<K: Keep<M>>(&mut self) -> Result<TaskToken, StepError> {
        let token = match self.cold.as_mut().and_then(|c| c.token.take()) {
            Some(token) => token,
            None => TaskToken::generate(self.id, self.step, self.attempt).map_err(|e| {
                StepError::retryable("random", format_args!("no random bytes for a token: {e}"))
            })?,
        };
        if let (Some(waits), Some(state)) = (self.waits, self.kept.as_ref()) {
            self.copying = true;
            let copy = K::keep(state);
            self.copying = false;
            waits.open(&token, copy);
        }
        self.cold().handed_out = Some(token.secret);
        Ok(token)
    }

    /// The driver's out-of-line part, made on first use.
    pub(crate) fn cold(&mut self) -> &mut Cold<'b> {
        self.cold.get_or_insert_with(Box::default)
    }

    /// Whether the loop halted to pause before a step (see [`Cold::paused`]); clears it.
    pub(crate) fn take_paused(&mut self) -> bool {
        self.cold
            .as_mut()
            .is_some_and(|c| std::mem::take(&mut c.paused))
    }

    /// The secret of the token the step under way handed out, if it did.
    pub(crate) fn take_handed_out(&mut self) -> Option<u128> {
        self.cold.as_mut().and_then(|c| c.handed_out.take())
    }

    /// Ends the step of a waiting state, which handed out its token: the loop returns this
    /// (not an error: the executor sees the verdict) and the execution waits.
    pub fn wait(&mut self) -> StepError {
        self.deadline.disarm();
        self.deadline.set_verdict(Verdict::Waiting);
        StepError::fatal("wait", "waiting for a task token")
    }

    /// Ends the step under way, which succeeded by taking transition `transition`.
    #[inline(always)]
    pub fn done(&mut self, transition: usize) {
        if self.watched {
            self.watch_done(transition);
        }
        // A step never runs with the last step number (it halts), so this does not overflow.
        self.step += 1;
        self.attempt = 1;
        self.kept = None;
        if self.step == u32::MAX {
            self.checks |= HALT;
        }
    }

    /// Moves on to the next step number, at its first attempt, after a step that did not
    /// end through [`Driver::done`] (an error route, an answered wait). The last step number
    /// is never used: an execution that reaches it has no key left to give a step, and
    /// halts before its next attempt (see `Verdict::Halted`).
    pub(crate) fn advance(&mut self) {
        self.step = self.step.saturating_add(1);
        self.attempt = 1;
        if self.step == u32::MAX {
            self.checks |= HALT;
        }
    }

    #[inline(never)]
    fn watch_start(&mut self, index: usize) {
        if let Some(cold) = self.cold.as_mut().filter(|c| c.pause) {
            if cold.began {
                cold.paused = true;
                self.checks = HALT;
                return;
            }
            cold.began = true;
        }
        self.index = index;
        // Only a watched execution has checks: they are set here for each step.
        self.checks = if self.rec.is_full() || self.step == u32::MAX {
            HALT
        } else {
            0
        };
        if self.rec.is_active() {
            let started = self.rec.start_attempt();
            let state = M::DEFINITION.states[index].name;
            let attempt = self.attempt;
            self.rec
                .event(started, || EventKind::StepStarted { state, attempt });
        }
        if let Some(limit) = self.policies.get(index).and_then(|p| p.timeout) {
            self.deadline.arm(limit);
            self.checks |= TIMED;
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

/// The error of an execution whose history is full.
pub(crate) fn history_full() -> StepError {
    StepError::fatal(StepError::HISTORY_LIMIT, "the execution's history is full")
}

/// The message a panic carried, if it is text.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// The time limit of the attempt under way, shared by the loop (which arms it) and [`Guard`]
/// (which enforces it): nanoseconds after `origin`, or `NONE`.
/// It also carries the executor's [`Verdict`] on the attempt under way.
pub(crate) struct Deadline {
    origin: Option<Instant>,
    at: AtomicU64,
    verdict: AtomicU8,
}

impl Deadline {
    const NONE: u64 = u64::MAX;

    /// A deadline for an execution; `timeouts` says whether any of its steps has a limit.
    #[inline]
    pub(crate) fn new(timeouts: bool) -> Self {
        Deadline {
            origin: timeouts.then(Instant::now),
            at: AtomicU64::new(Self::NONE),
            verdict: AtomicU8::new(Verdict::None as u8),
        }
    }

    /// Whether the attempt under way has run past its time limit.
    #[inline]
    fn overdue(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        match self.origin {
            Some(origin) if at != Self::NONE => origin.elapsed().as_nanos() >= u128::from(at),
            _ => false,
        }
    }

    #[inline]
    fn set_verdict(&self, verdict: Verdict) {
        self.verdict.store(verdict as u8, Ordering::Relaxed);
    }

    #[inline]
    fn verdict(&self) -> Verdict {
        match self.verdict.load(Ordering::Relaxed) {
            1 => Verdict::Late,
            2 => Verdict::Halted,
            4 => Verdict::Waiting,
            _ => Verdict::None,
        }
    }

    /// The verdict on the attempt that just stopped, cleared for the next.
    #[inline]
    pub(crate) fn take_verdict(&self) -> Verdict {
        let verdict = self.verdict();
        self.set_verdict(Verdict::None);
        verdict
    }

    /// Clears the time limit of the attempt under way.
    #[inline]
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

/// A step's future as it is polled: in its span with the `tracing` feature.
#[cfg(feature = "tracing")]
type Traced<F> = tracing::instrument::Instrumented<F>;
#[cfg(not(feature = "tracing"))]
type Traced<F> = F;

/// An execution gives its thread back to the runtime once every this many steps, so that a
/// machine whose steps are always ready (a loop that never waits) cannot starve the other
/// tasks of its worker thread.
const YIELD_EVERY: u32 = 1024;

/// [`Attempt`]'s checks: give the thread back before the step; do not run the step (the
/// history is full); discard a result that arrives past the step's time limit.
const YIELD: u8 = 1;
const HALT: u8 = 2;
const TIMED: u8 = 4;

pin_project_lite::pin_project! {
    /// One attempt of a step, as the generated loop awaits it (see [`Driver::attempt`]).
    #[doc(hidden)]
    pub struct Attempt<'b, F> {
        #[pin]
        step: F,
        limits: &'b Deadline,
        checks: u8,
    }
}

impl<T, F: Future<Output = Result<T, StepError>>> Future for Attempt<'_, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.checks & (YIELD | HALT) != 0 {
            if *this.checks & HALT != 0 {
                this.limits.set_verdict(Verdict::Halted);
                // The executor tells a pause and the last step number from a full history.
                return Poll::Ready(Err(history_full()));
            }
            *this.checks &= !YIELD;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.step.poll(cx) {
            Poll::Ready(Ok(_)) if *this.checks & TIMED != 0 && this.limits.overdue() => {
                this.limits.set_verdict(Verdict::Late);
                Poll::Ready(Err(StepError::retryable(
                    StepError::TIMEOUT,
                    "the step returned after its time limit",
                )))
            }
            other => other,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::recorder::Recorder;

    #[derive(crate::Fsm, Clone)]
    #[fsm(crate = crate)]
    enum Lamp {
        #[fsm(initial, on(switch => Off))]
        On,
        #[fsm(terminal)]
        Off,
    }

    fn poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        future.poll(&mut cx)
    }

    fn driver(step: u32, deadline: &Deadline) -> Driver<'_, Lamp> {
        Driver {
            kept: None,
            id: ExecutionId::from_u128(1),
            step,
            attempt: 1,
            watched: false,
            copying: false,
            checks: 0,
            index: 0,
            policies: &[],
            cold: None,
            waits: None,
            rec: Recorder::inactive(),
            deadline,
        }
    }

    #[test]
    fn the_last_step_number_halts_the_execution_instead_of_running_the_step() {
        let deadline = Deadline::new(false);
        let mut driver = driver(u32::MAX - 1, &deadline);
        driver.done(0);
        assert_eq!(driver.step, u32::MAX);
        let mut attempt = core::pin::pin!(driver.attempt(async { Ok::<(), StepError>(()) }));
        assert!(matches!(poll(attempt.as_mut()), Poll::Ready(Err(_))));
        assert_eq!(deadline.take_verdict(), Verdict::Halted);
    }

    #[test]
    fn every_1024th_step_yields_once_then_runs() {
        let deadline = Deadline::new(false);
        for (step, yields) in [(0, false), (1022, false), (1023, true), (2047, true)] {
            let driver = driver(step, &deadline);
            let mut attempt = core::pin::pin!(driver.attempt(async { Ok::<u8, StepError>(7) }));
            if yields {
                assert!(poll(attempt.as_mut()).is_pending(), "step {step}");
            }
            assert!(
                matches!(poll(attempt.as_mut()), Poll::Ready(Ok(7))),
                "step {step}"
            );
        }
        assert_eq!(deadline.take_verdict(), Verdict::None);
    }
}
