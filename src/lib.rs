//! The workspace root package: it holds the examples, the integration and trybuild tests and
//! the benches of `fsm-core`. It has no code of its own; depend on `fsm-core`.
