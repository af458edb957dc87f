//! The error of durable executions, shared by the client and the worker.

use crate::durable::store::StoreError;
use crate::ExecutionId;

/// Why a durable execution, or a call on the durable executor, could not go on. Each names
/// the execution it is about; the others go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurableError {
    /// The store refused or failed.
    Store(StoreError),
    /// A state could not be written as JSON (its `Serialize` failed): the execution stays at
    /// its last checkpoint.
    Serialize {
        /// The execution, if it had been created.
        execution: Option<ExecutionId>,
        /// serde's message.
        message: String,
    },
    /// A stored execution cannot be read as this machine: its state is gone from the
    /// definition, its data no longer deserializes, or the row contradicts itself. It stays
    /// in the store untouched.
    BadState {
        /// The execution.
        execution: ExecutionId,
        /// What is wrong.
        message: String,
    },
    /// The execution is another machine's.
    WrongMachine {
        /// The execution.
        execution: ExecutionId,
        /// The machine it belongs to.
        found: String,
    },
    /// No such execution.
    NotFound {
        /// The execution.
        execution: ExecutionId,
    },
    /// A named start found the name taken by another of the machine's executions, and was
    /// told to fail then ([`IfNameTaken::Fail`](crate::IfNameTaken::Fail)). Nothing was
    /// written.
    NameTaken {
        /// The name.
        name: String,
        /// The execution that has it.
        execution: ExecutionId,
    },
    /// A start's name is not one: empty, longer than 256 bytes, or with a control character.
    BadName {
        /// The name (control characters escaped).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A durable executor needs a tokio runtime to run its scheduler on, and was built
    /// outside one.
    NoRuntime,
    /// The operating system gave no random bytes for a task token: the execution stays
    /// before its waiting step.
    NoRandomness {
        /// The execution.
        execution: ExecutionId,
        /// The operating system's error.
        message: String,
    },
}

impl core::fmt::Display for DurableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DurableError::Store(e) => e.fmt(f),
            DurableError::Serialize {
                execution: Some(id),
                message,
            } => write!(f, "execution {id}: its state cannot be stored: {message}"),
            DurableError::Serialize {
                execution: None,
                message,
            } => write!(f, "the state cannot be stored: {message}"),
            DurableError::BadState { execution, message } => {
                write!(f, "execution {execution} cannot be resumed: {message}")
            }
            DurableError::WrongMachine { execution, found } => {
                write!(f, "execution {execution} is of machine `{found}`")
            }
            DurableError::NotFound { execution } => write!(f, "no execution {execution}"),
            DurableError::NameTaken { name, execution } => {
                write!(f, "the name {name:?} is taken by execution {execution}")
            }
            DurableError::BadName { name, reason } => {
                write!(f, "{name:?} cannot name an execution: {reason}")
            }
            DurableError::NoRandomness { execution, message } => write!(
                f,
                "execution {execution}: no random bytes for a task token: {message}"
            ),
            DurableError::NoRuntime => {
                f.write_str("a durable executor must be built inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for DurableError {}

impl From<StoreError> for DurableError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { execution } => DurableError::NotFound { execution },
            e => DurableError::Store(e),
        }
    }
}
