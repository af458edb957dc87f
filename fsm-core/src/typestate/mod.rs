//! Layer 1, the typestate layer: what `#[derive(Fsm)]` generates code against, and nothing
//! that needs an async runtime. The definition of a machine as static data (its states,
//! transitions, policies and waits), the retry policies it declares, and the error of a
//! conversion from the enum to a typed state.
//!
//! Uses nothing else of fsm-core. Everything above (the runtime, durable executions, the
//! views) reads the definition from here.

pub(crate) mod definition;
pub(crate) mod error;
pub(crate) mod policy;
