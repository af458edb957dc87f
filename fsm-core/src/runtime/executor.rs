//! The executor: drives executions from their state to a terminal state through the
//! generated step loop (see `driver`), with retries, timeouts, error routing, panic
//! isolation, history and observation.

use core::future::Future;
use core::marker::PhantomData;
use core::time::Duration;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::runtime::driver::{
    history_full, panic_text, Cloned, Deadline, Driver, Guard, Stop, Verdict,
};
use crate::runtime::policies::Policy;
use crate::runtime::random::JitterSource;
use crate::runtime::recorder::{Observer, Recorder, Recording};
use crate::runtime::waits::{Answer, Waits};
use crate::{
    Dispatch, EventKind, ExecutionId, History, HistoryEvent, RetryPolicy, StateKind, StepError,
};

/// Runs executions of machine `M` with the step handlers `H` (an implementation of the
/// machine's generated `Steps` trait).
///
/// Cheap to clone: clones share the handlers, the policies and the execution counter, so many
/// executions run concurrently on one executor ([`Executor::spawn`]).
///
/// ```
/// use fsm_core::{Context, Executor, Fsm, Status, StepError};
///
/// #[derive(Fsm, Debug, Clone, PartialEq)]
/// enum Signup {
///     #[fsm(initial, on(verify => Verified | Rejected), retry(max_attempts = 2, interval_ms = 10))]
///     Submitted { email: String },
///     #[fsm(terminal)]
///     Verified { email: String },
///     #[fsm(terminal(failure))]
///     Rejected,
/// }
///
/// struct Mailer;
///
/// impl signup::Steps for Mailer {
///     async fn submitted(
///         &self,
///         form: signup::Machine<signup::Submitted>,
///         cx: Context,
///     ) -> Result<signup::SubmittedNext, StepError> {
///         if cx.attempt == 1 {
///             return Err(StepError::retryable("smtp", "server busy"));
///         }
///         Ok(if form.email.contains('@') {
///             form.verify(|f| signup::Verified { email: f.email }).into()
///         } else {
///             form.verify(|_| signup::Rejected).into()
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let executor = Executor::<Signup, _>::new(Mailer);
/// let start = signup::Machine::new(signup::Submitted { email: "ada@example.org".into() });
/// let outcome = executor.run(start).await;
/// assert_eq!(outcome.status, Status::Succeeded);
/// assert_eq!(outcome.state, Signup::Verified { email: "ada@example.org".into() });
/// println!("{}", outcome.history); // 2 attempts, a retry, a transition
/// # }
/// ```
pub struct Executor<M, H> {
    inner: Arc<Core<H>>,
    waits: Arc<Waits<M>>,
    machine: PhantomData<fn() -> M>,
}

/// What every executor, in memory or durable, shares: the handlers and the policies.
pub(crate) struct Core<H> {
    pub(crate) steps: H,
    pub(crate) policies: Box<[Policy]>,
    pub(crate) record_history: bool,
    pub(crate) observer: Option<Observer>,
    pub(crate) ids: crate::runtime::step::IdSource,
    /// Whether any state has a time limit per attempt.
    pub(crate) has_timeouts: bool,
    /// The most events a history holds.
    pub(crate) history_limit: usize,
    /// Mixed into each execution's jitter, so that executors (and processes) that number
    /// their executions alike still spread their retries.
    pub(crate) jitter_seed: u64,
    /// Whether the executor reports metrics (`ExecutorBuilder::metrics`).
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    pub(crate) metrics: bool,
}

impl<H> Core<H> {
    /// What executions of this executor record.
    pub(crate) fn recording(&self) -> Recording<'_> {
        Recording {
            history: self.record_history,
            observer: self.observer.as_ref(),
            limit: self.history_limit,
        }
    }
}

impl<M, H> Clone for Executor<M, H> {
    fn clone(&self) -> Self {
        Executor {
            inner: Arc::clone(&self.inner),
            waits: Arc::clone(&self.waits),
            machine: PhantomData,
        }
    }
}

/// The error of an attempt of `failed`'s step that `what` its time limit, and the limit.
/// (Only a limit the step's policy armed can be run past.)
fn timed_out<M: crate::Fsm>(policies: &[Policy], failed: &M, what: &str) -> (StepError, Duration) {
    let limit = policies[failed.state_index()].timeout.unwrap_or_default();
    let message = format_args!("attempt {what} {limit:?}");
    (StepError::retryable(StepError::TIMEOUT, message), limit)
}

/// What drives executions of machine `M` with handlers `H`: the handlers, the policies of
/// the machine's states and what is recorded. An executor is one; the branches of a
/// fanning-out state run with a host of their own (their machine's declared policies, the
/// parent's handlers and recording).
pub(crate) trait Host<M, H>: Sync {
    fn steps(&self) -> &H;
    fn policies(&self) -> &[Policy];
    fn has_timeouts(&self) -> bool;
    fn recording(&self) -> Recording<'_>;
    fn jitter_seed(&self) -> u64;
    /// Where tokens are kept (a machine that waits only).
    fn waits(&self) -> Option<&Waits<M>>;
}

impl<M: Send, H: Send + Sync> Host<M, H> for Executor<M, H> {
    #[inline]
    fn steps(&self) -> &H {
        &self.inner.steps
    }
    #[inline]
    fn policies(&self) -> &[Policy] {
        &self.inner.policies
    }
    #[inline]
    fn has_timeouts(&self) -> bool {
        self.inner.has_timeouts
    }
    #[inline]
    fn recording(&self) -> Recording<'_> {
        self.inner.recording()
    }
    #[inline]
    fn jitter_seed(&self) -> u64 {
        self.inner.jitter_seed
    }
    #[inline]
    fn waits(&self) -> Option<&Waits<M>> {
        Some(&self.waits)
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// It reached a terminal state of kind success.
    Succeeded,
    /// It reached a terminal state of kind failure (`#[fsm(terminal(failure))]`).
    Failed,
    /// A step failed for good and no `catch` routed its error: the execution stopped in that
    /// step's state.
    Errored {
        /// How many attempts the step had.
        attempts: u32,
        /// The last attempt's error.
        error: StepError,
    },
}

/// The result of one execution.
#[derive(Debug, Clone)]
pub struct Outcome<M> {
    /// The execution.
    pub id: ExecutionId,
    /// The state it ended in, as the enum.
    pub state: M,
    /// How it ended.
    pub status: Status,
    /// What happened, in order (empty when recording is switched off).
    pub history: History,
}

impl<M> Outcome<M> {
    /// Whether the execution ended in a terminal state of kind success.
    pub fn is_success(&self) -> bool {
        self.status == Status::Succeeded
    }
}

/// A state name given to [`ExecutorBuilder`] that the machine does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState {
    /// The machine.
    pub machine: &'static str,
    /// The name that was given.
    pub name: String,
}

impl core::fmt::Display for UnknownState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "machine `{}` has no state `{}`", self.machine, self.name)
    }
}

impl std::error::Error for UnknownState {}

/// Builds an [`Executor`], overriding the policies the declaration gives.
pub struct ExecutorBuilder<M, H> {
    steps: H,
    policies: Vec<Policy>,
    record_history: bool,
    history_limit: usize,
    observer: Option<Observer>,
    metrics: bool,
    machine: PhantomData<fn() -> M>,
}

impl<M: crate::Fsm, H> ExecutorBuilder<M, H> {
    fn state(&mut self, name: &str) -> Result<&mut Policy, UnknownState> {
        let def = M::DEFINITION;
        match def.state_index(name) {
            Some(i) => Ok(&mut self.policies[i]),
            None => Err(UnknownState {
                machine: def.name,
                name: name.to_owned(),
            }),
        }
    }

    /// Retries the step of `state` with `policy` instead of its declared `retry(...)`.
    pub fn retry(mut self, state: &str, policy: RetryPolicy) -> Result<Self, UnknownState> {
        self.state(state)?.retry = policy;
        Ok(self)
    }

    /// Gives each attempt of `state`'s step `timeout` (or none), instead of its declared
    /// `timeout_ms`.
    pub fn timeout(mut self, state: &str, timeout: Option<Duration>) -> Result<Self, UnknownState> {
        self.state(state)?.timeout = timeout;
        Ok(self)
    }

    /// Gives the wait of waiting state `state` `timeout` (or none), instead of its declared
    /// `wait(timeout_ms = ...)`.
    pub fn wait_timeout(
        mut self,
        state: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, UnknownState> {
        self.state(state)?.wait_timeout = timeout;
        Ok(self)
    }

    /// Whether executions record their history (on by default). Switched off, an
    /// [`Outcome::history`] is empty and the hot path takes no timestamps; observers still
    /// see every event.
    pub fn record_history(mut self, record: bool) -> Self {
        self.record_history = record;
        self
    }

    /// The most events an execution's history holds (by default
    /// [`History::DEFAULT_LIMIT`], 25,000, Step Functions' limit). An execution whose history
    /// reaches it ends before its next attempt, [`Status::Errored`] with an error of kind
    /// [`StepError::HISTORY_LIMIT`], not retried and not routed; the history keeps the first
    /// `limit` events and the one that ends it. The limit applies only while history is
    /// recorded: it bounds the memory an always-failing step with a large `max_attempts`, or
    /// a machine that loops, can take.
    pub fn history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }

    /// Calls `observer` with every history event of every execution as it happens (for logs,
    /// metrics, alerts). It runs inline on the execution's task: keep it quick. A panic in the
    /// observer is not a step's failure: it unwinds out of the execution's future.
    pub fn observer(
        mut self,
        observer: impl Fn(ExecutionId, &HistoryEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Reports every execution's and step's events through the `metrics` facade (feature
    /// `metrics`), to whatever recorder the application installed: the counters
    /// `fsm_executions_started_total`, `_succeeded_total`, `_failed_total`, `_errored_total`,
    /// `_timed_out_total`, `fsm_step_attempts_total` (by `outcome`), the histograms
    /// `fsm_execution_duration_seconds`, `fsm_step_duration_seconds` and, for a durable
    /// worker, `fsm_schedule_to_start_seconds`; labelled by machine, state, status and error
    /// kind, never by execution. Off by default: an executor without it pays nothing.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// The executor.
    pub fn build(self) -> Executor<M, H> {
        Executor {
            inner: Arc::new(self.core()),
            waits: Arc::default(),
            machine: PhantomData,
        }
    }

    /// What the executor shares with its executions.
    pub(crate) fn core(self) -> Core<H> {
        let has_timeouts = self.policies.iter().any(|p| p.timeout.is_some());
        #[cfg(feature = "metrics")]
        let observer = if self.metrics {
            Some(crate::metrics::observer(M::DEFINITION, self.observer))
        } else {
            self.observer
        };
        #[cfg(not(feature = "metrics"))]
        let observer = self.observer;
        Core {
            steps: self.steps,
            policies: self.policies.into_boxed_slice(),
            record_history: self.record_history,
            observer,
            metrics: self.metrics,
            ids: crate::runtime::step::IdSource::new(crate::runtime::random::random_u128()),
            has_timeouts,
            history_limit: self.history_limit,
            jitter_seed: crate::runtime::random::random_seed(),
        }
    }
}

impl<M, H> Executor<M, H>
where
    M: Dispatch<H> + Clone,
    H: Send + Sync + 'static,
{
    /// An executor with the policies the declaration gives.
    pub fn new(steps: H) -> Self {
        Self::builder(steps).build()
    }

    /// A builder, to override policies, switch history off or add an observer.
    pub fn builder(steps: H) -> ExecutorBuilder<M, H> {
        let policies = crate::runtime::policies::declared(M::DEFINITION).collect();
        ExecutorBuilder {
            steps,
            policies,
            record_history: true,
            history_limit: History::DEFAULT_LIMIT,
            observer: None,
            metrics: false,
            machine: PhantomData,
        }
    }

    /// The step handlers.
    pub fn steps(&self) -> &H {
        &self.inner.steps
    }

    /// Starts an execution from `start` (a typed state or the enum; normally the initial
    /// state, any other state resumes from there) and drives it to a terminal state, or until
    /// a step fails for good.
    ///
    /// The execution gets its id when `run` is called; nothing runs until the future is
    /// polled.
    pub fn run(&self, start: impl Into<M>) -> impl Future<Output = Outcome<M>> + Send + '_ {
        let id = self.inner.ids.next();
        let run = drive(self, id, start.into());
        #[cfg(feature = "tracing")]
        let run = tracing::Instrument::instrument(
            run,
            tracing::info_span!("execution", machine = M::DEFINITION.name, execution = %id),
        );
        run
    }

    /// Completes the wait that handed out `token`: `complete` receives the waiting state,
    /// typed (`Machine<State>`), and returns one of its next states, which the execution
    /// goes on from. `State` names the waiting state, and only its next states compile.
    ///
    /// Returns the execution's id. A malformed, forged, already used or stale token, or one
    /// whose wait timed out, is refused with a [`TokenError`](crate::TokenError) and
    /// changes nothing.
    ///
    /// ```
    /// use fsm_core::{Context, Executor, Fsm, StepError, TaskToken};
    /// use std::sync::Mutex;
    ///
    /// #[derive(Fsm, Debug, Clone, PartialEq)]
    /// enum Parcel {
    ///     #[fsm(initial, wait, on(deliver => Delivered))]
    ///     Shipped { id: u32 },
    ///     #[fsm(terminal)]
    ///     Delivered { id: u32 },
    /// }
    ///
    /// struct Carrier(Mutex<Option<String>>);
    ///
    /// impl parcel::Steps for Carrier {
    ///     async fn shipped(&self, _: parcel::Machine<parcel::Shipped>, _: Context, token: TaskToken) -> Result<(), StepError> {
    ///         *self.0.lock().unwrap() = Some(token.to_string()); // hand it to the carrier
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let executor = Executor::<Parcel, _>::new(Carrier(Mutex::new(None)));
    /// let run = executor.spawn(parcel::Machine::new(parcel::Shipped { id: 7 }));
    /// # tokio::task::yield_now().await;
    /// let token = executor.steps().0.lock().unwrap().clone().unwrap();
    /// executor
    ///     .complete::<parcel::Shipped, _>(&token, |p| p.deliver(|s| parcel::Delivered { id: s.id }))
    ///     .unwrap();
    /// assert_eq!(run.await.unwrap().state, Parcel::Delivered { id: 7 });
    /// # }
    /// ```
    pub fn complete<S, N>(
        &self,
        token: impl crate::AsTaskToken,
        complete: impl FnOnce(S::Typed) -> N,
    ) -> Result<ExecutionId, crate::TokenError>
    where
        S: crate::Waiting<M>,
        N: Into<S::Next>,
    {
        let token = token.as_task_token()?;
        self.waits.answer(&token, Some(S::NAME), |m| {
            let typed = S::typed(m).map_err(|e| crate::TokenError::WrongState {
                expected: S::NAME,
                waiting: e.found().to_owned(),
            })?;
            let (next, transition) = S::leave(complete(typed).into());
            Ok(Answer::Completed(next, transition))
        })?;
        Ok(token.execution())
    }

    /// Fails the wait that handed out `token` with `error`: the waiting state's retry policy
    /// and error routes apply, as to a step's error. Refuses a bad token as
    /// [`Executor::complete`] does.
    pub fn fail(
        &self,
        token: impl crate::AsTaskToken,
        error: StepError,
    ) -> Result<ExecutionId, crate::TokenError> {
        let token = token.as_task_token()?;
        self.waits
            .answer(&token, None, |_| Ok(Answer::Failed(error)))?;
        Ok(token.execution())
    }

    /// Runs [`Executor::run`] as a task of the current tokio runtime.
    pub fn spawn(&self, start: impl Into<M>) -> tokio::task::JoinHandle<Outcome<M>> {
        let this = self.clone();
        let start = start.into();
        tokio::spawn(async move { this.run(start).await })
    }
}

/// Waits, in memory, for the answer to the token that the step of `waiting` handed out.
/// `Ok` is the state the answer leads to; `Err` the failure it counts as (failed by the
/// outside world, or timed out).
async fn wait<M: crate::Fsm>(
    policies: &[Policy],
    waits: &Waits<M>,
    driver: &mut Driver<'_, M>,
    waiting: M,
) -> Result<M, (M, StepError, Option<Duration>)> {
    let info = &M::DEFINITION.states[waiting.state_index()];
    let Some(secret) = driver.take_handed_out() else {
        unreachable!("a waiting step returned without handing out its token")
    };
    let timeout = policies[waiting.state_index()].wait_timeout;
    let name = info.name;
    driver.wait_started(name, timeout);
    let answer = match waits.wait(secret) {
        Ok(answer) => Some(answer),
        Err(rx) => match timeout {
            None => rx.await.ok(),
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(answer) => answer.ok(),
                Err(_) if waits.close(secret, crate::TokenError::TimedOut) => None,
                // Answered as the timeout fired: the answer stands.
                Err(_) => waits.wait(secret).ok(),
            },
        },
    };
    match answer {
        Some(Answer::Completed(next, transition)) => {
            driver.wait_completed(name, transition, (None, false));
            Ok(next)
        }
        Some(Answer::Failed(error)) => {
            driver.wait_failed(name, (None, false));
            Err((waiting, error, None))
        }
        None => {
            let limit = timeout.unwrap_or_default();
            let message = format_args!("no answer to the task token within {limit:?}");
            Err((
                waiting,
                StepError::retryable(StepError::TIMEOUT, message),
                Some(limit),
            ))
        }
    }
}

/// An execution, as the future `run` returns. (An `async` block rather than an `async fn`:
/// rustc keeps an `async fn`'s arguments in its future twice, and every execution's
/// future is moved when it starts.)
#[allow(clippy::manual_async_fn)]
pub(crate) fn drive<'a, M, H, X>(
    host: &'a X,
    id: ExecutionId,
    mut state: M,
) -> impl Future<Output = Outcome<M>> + Send + 'a
where
    M: Dispatch<H> + Clone,
    H: Sync + 'a,
    X: Host<M, H>,
{
    async move {
        let def = M::DEFINITION;
        let deadline = Deadline::new(host.has_timeouts());
        let mut driver = Driver {
            kept: None,
            id,
            step: 0,
            attempt: 1,
            watched: host.has_timeouts() || cfg!(feature = "tracing"),
            copying: false,
            checks: 0,
            index: 0,
            policies: host.policies(),
            cold: None,
            // Only a machine that waits has tokens; the driver forgets them when it goes.
            waits: if M::WAITS { host.waits() } else { None },
            // Built in place: a local moved into the driver would keep a slot of its own
            // in the future.
            rec: Recorder::new(id, host.recording(), def),
            deadline: &deadline,
        };
        driver.watched |= driver.rec.is_active();
        let at = driver.rec.stamp();
        driver.rec.event(at, || EventKind::ExecutionStarted {
            state: state.state_name(),
        });
        let mut jitter = JitterSource::for_execution(host.jitter_seed(), id);
        loop {
            // The generated loop runs step after step until a terminal state or a failure.
            let stop = Guard::new(state.run::<Cloned>(host.steps(), &mut driver), &deadline).await;
            deadline.disarm();
            let verdict = deadline.take_verdict();
            let (failed, error, timed_out) = match stopped(stop, verdict, &mut driver) {
                Stopped::Ended(end) => return driver.finish(end),
                Stopped::Failed(failed, error, timed_out) => (failed, error, timed_out),
                Stopped::GaveUp(failed, error) => return driver.give_up(failed, error),
                // The in-memory loop does not pause.
                Stopped::Paused(next) => {
                    state = next;
                    continue;
                }
                // Boxed: a wait's future would otherwise make every execution's larger.
                Stopped::Waiting(waiting) => match driver.waits {
                    Some(waits) if M::WAITS => {
                        let policies = host.policies();
                        match Box::pin(wait(policies, waits, &mut driver, waiting)).await {
                            Ok(next) => {
                                state = next;
                                continue;
                            }
                            Err(failure) => failure,
                        }
                    }
                    // Only the loop of a machine that waits, on an executor that keeps its
                    // tokens, stops to wait.
                    _ => {
                        let error =
                            StepError::fatal("wait", "a machine without waits stopped to wait");
                        (waiting, error, None)
                    }
                },
            };
            if let (Some(secret), Some(waits)) = (driver.take_handed_out(), driver.waits) {
                // The step failed after handing out its token: the token is of no more use.
                waits.close(secret, crate::TokenError::Stale);
            }
            match after_failure(
                host.steps(),
                &mut driver,
                failed,
                error,
                timed_out,
                &mut jitter,
            ) {
                AfterFailure::Retry(failed, delay) => {
                    // Boxed, like the guard's: it would otherwise make every execution's
                    // future larger, and futures are moved.
                    Box::pin(tokio::time::sleep(delay)).await;
                    state = failed;
                }
                AfterFailure::Routed(next) => state = next,
                AfterFailure::Errored(failed, error) => return driver.give_up(failed, error),
            }
        }
    }
}

/// How a run of the generated loop ended, as the executors see it.
pub(crate) enum Stopped<M> {
    /// In a terminal state.
    Ended(M),
    /// Before a step began: the history is full, the execution has used its last step
    /// number, or the machine's `Clone` panicked. Not the step's failure: not retried or
    /// routed.
    GaveUp(M, StepError),
    /// A step failed in this state with this error; `Some(limit)` when it ran past its time
    /// limit.
    Failed(M, StepError, Option<Duration>),
    /// Before the step of this state, which a durable executor checkpoints first.
    Paused(M),
    /// The step of this waiting state handed out its token.
    Waiting(M),
}

/// What follows a step's failure.
pub(crate) enum AfterFailure<M> {
    /// Another attempt, in this state, after the delay (the history says so).
    Retry(M, Duration),
    /// An error route took the execution to this state (the history has the transition).
    Routed(M),
    /// Nothing: the execution ends, errored, in this state.
    Errored(M, StepError),
}

/// What the loop's stop means. A panic in an observer goes on unwinding, as it would
/// without the executor.
#[inline]
pub(crate) fn stopped<M: crate::Fsm>(
    stop: Stop<Result<M, StepError>>,
    verdict: Verdict,
    driver: &mut Driver<'_, M>,
) -> Stopped<M> {
    // The loop kept the state before each step began: a failure comes with it.
    match (stop, driver.kept.take()) {
        (Stop::Done(Ok(end)), _) => Stopped::Ended(end),
        (Stop::Done(Err(_)), Some(next)) if verdict == Verdict::Halted && driver.take_paused() => {
            Stopped::Paused(next)
        }
        (Stop::Done(Err(_)), Some(waiting)) if verdict == Verdict::Waiting => {
            Stopped::Waiting(waiting)
        }
        // The step had not begun: the history is full, or the state could not be
        // copied. Neither is the step's failure to retry or route.
        (Stop::Done(Err(error)), Some(failed)) if verdict == Verdict::Halted => {
            let error = if driver.step == u32::MAX {
                let message = "the execution has used every step number of its keys";
                StepError::fatal(StepError::STEP_LIMIT, message)
            } else {
                error
            };
            Stopped::GaveUp(failed, error)
        }
        (Stop::Panicked(payload), Some(failed)) if driver.copying => {
            let message = format!(
                "the machine's `Clone` panicked while copying `{}` before its step: {}",
                failed.state_name(),
                panic_text(&*payload)
            );
            Stopped::GaveUp(failed, StepError::fatal(StepError::PANIC, message))
        }
        (Stop::Done(Err(_)), Some(failed)) if verdict == Verdict::Late => {
            let (error, limit) = timed_out(driver.policies, &failed, "returned after its limit of");
            Stopped::Failed(failed, error, Some(limit))
        }
        (Stop::Done(Err(error)), Some(failed)) => Stopped::Failed(failed, error, None),
        (Stop::Panicked(payload), Some(failed)) if !driver.rec.in_observer() => {
            let message = format!("step panicked: {}", panic_text(&*payload));
            Stopped::Failed(failed, StepError::fatal(StepError::PANIC, message), None)
        }
        (Stop::Panicked(payload), _) => std::panic::resume_unwind(payload),
        (Stop::TimedOut, Some(failed)) => {
            let (error, limit) = timed_out(driver.policies, &failed, "ran past");
            Stopped::Failed(failed, error, Some(limit))
        }
        (Stop::Done(Err(_)) | Stop::TimedOut, None) => {
            unreachable!("the generated loop stopped outside a step")
        }
    }
}

/// Records a failed attempt of `failed`'s step and decides what follows: a retry, an
/// error route, or the end. (Out of line: the path without failures stays small.)
#[inline(never)]
pub(crate) fn after_failure<M: Dispatch<H> + Clone, H>(
    steps: &H,
    driver: &mut Driver<'_, M>,
    failed: M,
    error: StepError,
    timed_out: Option<Duration>,
    jitter: &mut JitterSource,
) -> AfterFailure<M> {
    let def = M::DEFINITION;
    let (index, attempt) = (failed.state_index(), driver.attempt);
    let name = def.states[index].name;
    let policy = &driver.policies[index];
    let rec = &mut driver.rec;
    let ended = rec.stamp();
    let duration = rec.attempt_duration(ended);
    // `timed_out` is the guard's own verdict: a step may return an error of kind
    // `timeout` itself, which is a failure like any other.
    match timed_out {
        Some(timeout) => rec.event(ended, || EventKind::StepTimedOut {
            state: name,
            attempt,
            timeout,
        }),
        None => rec.event(ended, || EventKind::StepFailed {
            state: name,
            attempt,
            duration,
            error: error.clone(),
        }),
    }
    if error.is_retryable() && attempt <= policy.retry.max_attempts {
        if rec.is_full() {
            return AfterFailure::Errored(failed, history_full());
        }
        let delay = policy.retry.delay(attempt, jitter.next_unit());
        driver.attempt += 1;
        rec.event(ended, || EventKind::RetryScheduled {
            state: name,
            attempt: attempt + 1,
            delay,
        });
        return AfterFailure::Retry(failed, delay);
    }
    let routed = if policy.has_catch {
        // The route's handler is the user's code too, and so is the machine's `Clone`
        // (a copy of the state goes to the route, the state stays for the outcome): a
        // panic in either fails this execution, not the executor.
        let panicked = |payload: Box<dyn std::any::Any + Send>, what: &str| {
            let message = format!("{what} panicked: {}", panic_text(&*payload));
            StepError::fatal(StepError::PANIC, message)
        };
        match catch_unwind(AssertUnwindSafe(|| failed.clone())) {
            Ok(input) => match catch_unwind(AssertUnwindSafe(|| input.recover(steps, &error))) {
                Ok(Ok(next)) => Ok(next),
                Ok(Err(_)) => Err(error),
                Err(payload) => Err(panicked(payload, "error route")),
            },
            Err(payload) => Err(panicked(payload, "the machine's `Clone`")),
        }
    } else {
        Err(error)
    };
    match routed {
        Ok((next, t)) => {
            let at = rec.stamp();
            rec.transition(at, t);
            driver.advance();
            AfterFailure::Routed(next)
        }
        Err(error) => AfterFailure::Errored(failed, error),
    }
}

impl<M: crate::Fsm> Driver<'_, M> {
    /// Records that the waiting state `state`'s step handed out its token: the wait, for up
    /// to `timeout`, begins (in memory and durable alike).
    pub(crate) fn wait_started(&mut self, state: &'static str, timeout: Option<Duration>) {
        let (at, attempt) = (self.rec.stamp(), self.attempt);
        self.rec.event(at, || EventKind::WaitStarted {
            state,
            attempt,
            timeout,
        });
    }

    /// Records that the wait in `state` was answered (by `by`, if named) with `transition`,
    /// which counts as the step it ends: the next state begins at its first attempt.
    pub(crate) fn wait_completed(
        &mut self,
        state: &'static str,
        transition: usize,
        (by, by_hand): (Option<String>, bool),
    ) {
        let (at, attempt) = (self.rec.stamp(), self.attempt);
        self.rec.event(at, || EventKind::WaitCompleted {
            state,
            attempt,
            by,
            by_hand,
        });
        self.rec.transition(at, transition);
        self.advance();
    }

    /// Records that the wait in `state` was failed from outside (by `by`, if named): the
    /// failure that follows is the waiting state's.
    pub(crate) fn wait_failed(
        &mut self,
        state: &'static str,
        (by, by_hand): (Option<String>, bool),
    ) {
        let (at, attempt) = (self.rec.stamp(), self.attempt);
        self.rec.event(at, || EventKind::WaitFailed {
            state,
            attempt,
            by,
            by_hand,
        });
    }

    /// The outcome of an execution that ends, errored, in `state`: its step failed for good,
    /// or its next step could not begin (its history is full, or its state could not be
    /// copied).
    #[cold]
    #[inline(never)]
    pub(crate) fn give_up(&mut self, state: M, error: StepError) -> Outcome<M> {
        let attempts = self.attempt;
        let rec = &mut self.rec;
        let at = rec.stamp();
        rec.event(at, || EventKind::ExecutionFailed {
            state: state.state_name(),
            attempts,
            error: Some(error.clone()),
        });
        Outcome {
            id: self.id,
            state,
            status: Status::Errored { attempts, error },
            history: rec.finish(),
        }
    }

    /// The outcome of an execution that reached the terminal state `end`. (Inlined: the
    /// outcome is then written once, where the caller reads it.)
    #[inline(always)]
    pub(crate) fn finish(&mut self, end: M) -> Outcome<M> {
        let rec = &mut self.rec;
        let info = &M::DEFINITION.states[end.state_index()];
        let state = info.name;
        let at = rec.stamp();
        let status = if info.kind == StateKind::Failure {
            rec.event(at, || EventKind::ExecutionFailed {
                state,
                attempts: 0,
                error: None,
            });
            Status::Failed
        } else {
            rec.event(at, || EventKind::ExecutionSucceeded { state });
            Status::Succeeded
        };
        Outcome {
            id: self.id,
            state: end,
            status,
            history: rec.finish(),
        }
    }
}
