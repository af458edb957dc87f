//! Layer 4: views of a machine and of what its executions did. [`Diagram`] draws a
//! definition, and an execution's path over it, as Mermaid or Graphviz DOT.

mod diagram;

pub use diagram::Diagram;

#[cfg(feature = "asl")]
pub(crate) mod asl;

#[cfg(feature = "asl")]
pub use asl::{fatal_error_name, run_task, wait_answer, Asl, TaskFailure, FATAL};
