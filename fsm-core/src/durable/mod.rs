//! Layer 3, durable executions: the same machines and steps as the in-memory executor, with
//! every transition checkpointed to a store before the next step begins.
//!
//! `store` is where executions live: the `Store` trait (the seam to a database), the checks
//! of stored rows both stores share, and the two stores, SQLite (`store::sqlite`) and
//! PostgreSQL (`store::postgres`). `error` is the durable layer's error; `client` reads,
//! starts and answers executions without running them; `executor` is the worker
//! (`DurableExecutor`), which claims due executions and drives them through the runtime's
//! step loop. `ops` acts on stored executions as an operator (redrive, cancel, answer a
//! wait by hand) through the store alone; `definition_json` is a definition as workers
//! register it in their store, for tools without the machine's code. `monitor` raises alerts
//! on executions that fail, stall or wait too long.
//!
//! Uses the typestate and runtime layers; `store` uses nothing of `client` or `executor`.

pub(crate) mod branches;
pub(crate) mod client;
pub(crate) mod definition_json;
pub(crate) mod error;
pub(crate) mod executor;
pub(crate) mod monitor;
pub(crate) mod ops;
pub mod store;
