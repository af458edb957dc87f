//! The executor: drives executions from their state to a terminal state through the
//! generated step dispatch, with retries, timeouts, error routing, panic isolation, history
//! and observation.

use core::future::Future;
use core::marker::PhantomData;
use core::task::Poll;
use core::time::Duration;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use crate::policy::JitterSource;
use crate::{
    Context, Dispatch, EventKind, ExecutionId, History, HistoryEvent, IdempotencyKey, RetryPolicy,
    StateKind, StepError,
};

/// A function that sees every history event of every execution as it happens.
pub type Observer = Arc<dyn Fn(ExecutionId, &HistoryEvent) + Send + Sync>;

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
    inner: Arc<Inner<H>>,
    machine: PhantomData<fn() -> M>,
}

struct Inner<H> {
    steps: H,
    policies: Box<[Policy]>,
    record_history: bool,
    observer: Option<Observer>,
    next_id: AtomicU64,
}

#[derive(Clone, Copy)]
struct Policy {
    retry: RetryPolicy,
    timeout: Option<Duration>,
    has_catch: bool,
}

impl<M, H> Clone for Executor<M, H> {
    fn clone(&self) -> Self {
        Executor {
            inner: Arc::clone(&self.inner),
            machine: PhantomData,
        }
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
    observer: Option<Observer>,
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

    /// Whether executions record their history (on by default). Switched off, an
    /// [`Outcome::history`] is empty and the hot path takes no timestamps; observers still
    /// see every event.
    pub fn record_history(mut self, record: bool) -> Self {
        self.record_history = record;
        self
    }

    /// Calls `observer` with every history event of every execution as it happens (for logs,
    /// metrics, alerts). It runs inline on the execution's task: keep it quick.
    pub fn observer(
        mut self,
        observer: impl Fn(ExecutionId, &HistoryEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The executor.
    pub fn build(self) -> Executor<M, H> {
        Executor {
            inner: Arc::new(Inner {
                steps: self.steps,
                policies: self.policies.into_boxed_slice(),
                record_history: self.record_history,
                observer: self.observer,
                next_id: AtomicU64::new(1),
            }),
            machine: PhantomData,
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
        let def = M::DEFINITION;
        let policies = def
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| Policy {
                retry: s.retry.unwrap_or(RetryPolicy::NONE),
                timeout: s.timeout,
                has_catch: def.transitions.iter().any(|t| t.catch && t.from == i),
            })
            .collect();
        ExecutorBuilder {
            steps,
            policies,
            record_history: true,
            observer: None,
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
    pub async fn run(&self, start: impl Into<M>) -> Outcome<M> {
        let id = ExecutionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let run = self.drive(id, start.into());
        #[cfg(feature = "tracing")]
        let run = tracing::Instrument::instrument(
            run,
            tracing::info_span!("execution", machine = M::DEFINITION.name, execution = id.0),
        );
        run.await
    }

    /// Runs [`Executor::run`] as a task of the current tokio runtime.
    pub fn spawn(&self, start: impl Into<M>) -> tokio::task::JoinHandle<Outcome<M>> {
        let this = self.clone();
        let start = start.into();
        tokio::spawn(async move { this.run(start).await })
    }

    async fn drive(&self, id: ExecutionId, mut state: M) -> Outcome<M> {
        let def = M::DEFINITION;
        let inner = &*self.inner;
        let mut rec = Recorder::new(id, inner, def);
        let at = rec.stamp();
        rec.event(at, || EventKind::ExecutionStarted {
            state: state.state_name(),
        });
        let mut jitter = JitterSource::new(id.0);
        let mut step = 0u32;
        loop {
            let index = state.state_index();
            let info = &def.states[index];
            let name = info.name;
            if info.kind != StateKind::Step {
                let at = rec.stamp();
                let status = if info.kind == StateKind::Success {
                    rec.event(at, || EventKind::ExecutionSucceeded { state: name });
                    Status::Succeeded
                } else {
                    rec.event(at, || EventKind::ExecutionFailed {
                        state: name,
                        attempts: 0,
                        error: None,
                    });
                    Status::Failed
                };
                return Outcome {
                    id,
                    state,
                    status,
                    history: rec.finish(),
                };
            }
            let policy = &inner.policies[index];
            let idempotency_key = IdempotencyKey {
                execution: id,
                step,
            };
            step += 1;
            let mut attempt = 1;
            let result = loop {
                let started = rec.stamp();
                rec.event(started, || EventKind::StepStarted {
                    state: name,
                    attempt,
                });
                let cx = Context {
                    execution: id,
                    attempt,
                    idempotency_key,
                };
                // The attempt is awaited here rather than in a helper `async fn`: each layer of
                // future costs a copy of the step's future per attempt.
                let run = guarded(state.clone().step(&inner.steps, cx));
                #[cfg(feature = "tracing")]
                let run = tracing::Instrument::instrument(
                    run,
                    tracing::info_span!("step", state = name, attempt, execution = id.0),
                );
                // `timed_out` is the timeout's own verdict: a step may return an error of kind
                // `timeout` itself, which is a failure like any other.
                let (outcome, timed_out) = match policy.timeout {
                    None => (run.await, None),
                    Some(limit) => match tokio::time::timeout(limit, run).await {
                        Ok(outcome) => (outcome, None),
                        Err(_) => {
                            let message = format_args!("attempt ran past {limit:?}");
                            (
                                Err(StepError::retryable(StepError::TIMEOUT, message)),
                                Some(limit),
                            )
                        }
                    },
                };
                let ended = rec.stamp();
                let duration = ended.saturating_sub(started);
                let error = match outcome {
                    Ok(next) => {
                        rec.event(ended, || EventKind::StepSucceeded {
                            state: name,
                            attempt,
                            duration,
                        });
                        break Ok(next);
                    }
                    Err(error) => error,
                };
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
                if !error.is_retryable() || attempt > policy.retry.max_attempts {
                    break Err(error);
                }
                let delay = policy.retry.delay(attempt, jitter.next_unit());
                attempt += 1;
                rec.event(ended, || EventKind::RetryScheduled {
                    state: name,
                    attempt,
                    delay,
                });
                tokio::time::sleep(delay).await;
            };
            // A step that succeeded leads to its transition at the moment it ended.
            let stepped = result.is_ok();
            let routed = match result {
                Ok(next) => Ok(next),
                Err(error) if policy.has_catch => {
                    // The catch handler is the user's code too: a panic in it fails this
                    // execution, not the executor.
                    let input = state.clone();
                    match catch_unwind(AssertUnwindSafe(|| input.recover(&inner.steps, &error))) {
                        Ok(Ok(next)) => Ok(next),
                        Ok(Err(_)) => Err(error),
                        Err(payload) => {
                            Err(StepError::fatal(StepError::PANIC, panic_message(&*payload)))
                        }
                    }
                }
                Err(error) => Err(error),
            };
            let at = if stepped { rec.last } else { rec.stamp() };
            match routed {
                Ok((next, t)) => {
                    rec.transition(at, t);
                    state = next;
                }
                Err(error) => {
                    rec.event(at, || EventKind::ExecutionFailed {
                        state: name,
                        attempts: attempt,
                        error: Some(error.clone()),
                    });
                    let status = Status::Errored {
                        attempts: attempt,
                        error,
                    };
                    return Outcome {
                        id,
                        state,
                        status,
                        history: rec.finish(),
                    };
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Polls a step, turning a panic into a failed attempt.
    struct Guarded<F> {
        #[pin]
        step: F,
    }
}

fn guarded<F>(step: F) -> Guarded<F> {
    Guarded { step }
}

impl<T, F: Future<Output = Result<T, StepError>>> Future for Guarded<F> {
    type Output = F::Output;

    #[inline]
    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let step = self.project().step;
        match catch_unwind(AssertUnwindSafe(|| step.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(StepError::fatal(
                StepError::PANIC,
                panic_message(&*payload),
            ))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("step panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("step panicked: {s}")
    } else {
        "step panicked".to_owned()
    }
}

/// Records history events and hands them to the observer. With neither, it does nothing and
/// takes no timestamps.
struct Recorder<'a> {
    id: ExecutionId,
    start: Option<Instant>,
    history: Option<History>,
    observer: Option<&'a Observer>,
    definition: &'static crate::Definition,
    /// The last timestamp taken, reused by events that happen at the same moment (a step's
    /// end and the transition it leads to).
    last: Duration,
}

impl<'a> Recorder<'a> {
    fn new<H>(
        id: ExecutionId,
        inner: &'a Inner<H>,
        definition: &'static crate::Definition,
    ) -> Self {
        let active = inner.record_history || inner.observer.is_some();
        Recorder {
            id,
            start: active.then(Instant::now),
            history: inner.record_history.then(|| History::with_capacity(16)),
            observer: inner.observer.as_ref(),
            definition,
            last: Duration::ZERO,
        }
    }

    /// The time since the execution started, if anything is recorded.
    #[inline]
    fn stamp(&mut self) -> Duration {
        if let Some(start) = self.start {
            self.last = start.elapsed();
        }
        self.last
    }

    #[inline]
    fn event(&mut self, at: Duration, kind: impl FnOnce() -> EventKind) {
        if self.start.is_none() {
            return;
        }
        let event = HistoryEvent { at, kind: kind() };
        if let Some(observer) = self.observer {
            observer(self.id, &event);
        }
        if let Some(history) = &mut self.history {
            history.push(event);
        }
    }

    fn transition(&mut self, at: Duration, index: usize) {
        let def = self.definition;
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

    fn finish(self) -> History {
        self.history.unwrap_or_default()
    }
}
