//! What a step receives and returns, and the contract between the generated code and the
//! executor. None of it needs an async runtime.

use core::fmt;
use std::borrow::Cow;

/// Identifies one execution of a machine on an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(pub u64);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exec-{}", self.0)
    }
}

/// A key for deduplicating a step's effects in the services it calls.
///
/// It is the same for every attempt of the same step of the same execution (retries, and in
/// time restarts), and different for every other step: pass it to a payment gateway as its
/// idempotency key and a retried charge is not charged twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The execution.
    pub execution: ExecutionId,
    /// The step's position in the execution: 0 for the first step, 1 for the next... An
    /// execution that would take a 4,294,967,296th step ends instead, `Errored` with an error
    /// of kind [`StepError::STEP_LIMIT`], so a key never names two steps.
    pub step: u32,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-step-{}", self.execution, self.step)
    }
}

/// What a step knows about the execution it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The execution.
    pub execution: ExecutionId,
    /// The attempt, from 1; retries count up.
    pub attempt: u32,
    /// The same for every attempt of this step; see [`IdempotencyKey`].
    pub idempotency_key: IdempotencyKey,
}

/// Why a step failed, and whether trying again may help.
///
/// The `kind` is what error routing matches (`#[fsm(catch(kind => State))]`), like the error
/// names of Amazon States Language. A retryable error is retried as the state's retry policy
/// says; a non-retryable one fails the step at once.
///
/// Any `std::error::Error` converts into a retryable `StepError` of kind `"error"`, so `?`
/// works in steps; build one with [`StepError::retryable`] or [`StepError::fatal`] to choose.
#[derive(Clone, PartialEq, Eq)]
pub struct StepError {
    // Boxed: a step's `Result` stays small on the path where nothing fails.
    inner: Box<ErrorInner>,
}

#[derive(Clone, PartialEq, Eq)]
struct ErrorInner {
    kind: Cow<'static, str>,
    message: String,
    retryable: bool,
}

impl StepError {
    /// Kind of the error an attempt gets when it runs past its timeout (retryable).
    pub const TIMEOUT: &'static str = "timeout";
    /// Kind of the error an attempt gets when its step panics (not retryable), and of an
    /// execution whose machine's `Clone` panicked.
    pub const PANIC: &'static str = "panic";
    /// Kind of the error an execution ends with when its history is full
    /// ([`ExecutorBuilder::history_limit`](crate::ExecutorBuilder::history_limit)); not
    /// retried, not routed.
    pub const HISTORY_LIMIT: &'static str = "history_limit";
    /// Kind of the error an execution ends with when it has used every step number of its
    /// idempotency keys (`u32::MAX` steps); not retried, not routed.
    pub const STEP_LIMIT: &'static str = "step_limit";

    /// An error that may go away: the step is retried if its policy allows.
    pub fn retryable(kind: impl Into<Cow<'static, str>>, message: impl fmt::Display) -> Self {
        StepError::new(kind.into(), message.to_string(), true)
    }

    /// An error that will not go away by trying again: the step fails at once.
    pub fn fatal(kind: impl Into<Cow<'static, str>>, message: impl fmt::Display) -> Self {
        StepError::new(kind.into(), message.to_string(), false)
    }

    fn new(kind: Cow<'static, str>, message: String, retryable: bool) -> Self {
        StepError {
            inner: Box::new(ErrorInner {
                kind,
                message,
                retryable,
            }),
        }
    }

    /// What kind of error this is, for routing.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether trying the step again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::retryable("error", error)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retry = if self.is_retryable() {
            "retryable"
        } else {
            "not retryable"
        };
        write!(f, "{}: {} ({retry})", self.kind(), self.message())
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("kind", &self.kind())
            .field("message", &self.message())
            .field("retryable", &self.is_retryable())
            .finish()
    }
}
