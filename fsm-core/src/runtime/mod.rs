//! Layer 2, the step runtime: running executions in memory, on tokio.
//!
//! What every step sees and returns (`step`: `Context`, `StepError`, `ExecutionId`, the
//! idempotency key) and the history it leaves (`history`) need no runtime, and are here
//! because the runtime defines them; the views read them too. With the `runtime` feature:
//! the contract between the generated step loop and the executor (`driver`), the recorder
//! and observer of histories (`recorder`), each state's policies as applied (`policies`),
//! the executor itself (`executor`), task tokens and in-memory waits (`token`, `waits`), and
//! randomness (`random`).
//!
//! Uses the typestate layer only. In order of use, without cycles: `step`, `history` <-
//! `random`, `policies`, `recorder`, `token` <- `waits` <- `driver` <- `executor`.

pub(crate) mod history;
pub(crate) mod step;

#[cfg(feature = "runtime")]
pub(crate) mod driver;
#[cfg(feature = "runtime")]
pub(crate) mod executor;
#[cfg(feature = "runtime")]
pub(crate) mod fan_out;
#[cfg(feature = "runtime")]
pub(crate) mod policies;
#[cfg(feature = "runtime")]
pub(crate) mod random;
#[cfg(feature = "runtime")]
pub(crate) mod recorder;
#[cfg(feature = "runtime")]
pub(crate) mod token;
#[cfg(feature = "runtime")]
pub(crate) mod waits;
