//! Typestate finite-state machines that orchestrate services.
//!
//! `#[derive(Fsm)]` on an enum turns each variant into a state and generates typed states, so
//! that an illegal transition (shipping an order that was never paid) does not compile. The
//! machine's graph is checked when it is declared, and is available as data through
//! [`Fsm::DEFINITION`].
//!
//! ```
//! use fsm_core::Fsm;
//!
//! #[derive(Fsm, Debug)]
//! enum Door {
//!     #[fsm(initial, on(open => Open))]
//!     Closed,
//!     #[fsm(on(close => Closed), on(remove => Removed))]
//!     Open,
//!     #[fsm(terminal)]
//!     Removed,
//! }
//!
//! fn main() {
//!     let closed = door::Machine::new(door::Closed);
//!     let open = closed.open(|door::Closed| door::Open);
//!     let stored: Door = open.into(); // the enum is the storable form
//!     let open = door::Machine::<door::Open>::try_from(stored).unwrap();
//!     let removed = open.remove(|_| door::Removed);
//!     assert_eq!(Door::from(removed).state_name(), "Removed");
//! }
//! ```
//!
//! Opening a door that is already open is refused by the compiler:
//!
//! ```compile_fail,E0277
//! # use fsm_core::Fsm;
//! # #[derive(Fsm)]
//! # enum Door {
//! #     #[fsm(initial, on(open => Open))] Closed,
//! #     #[fsm(on(close => Closed), on(remove => Removed))] Open,
//! #     #[fsm(terminal)] Removed,
//! # }
//! # fn main() {
//! let open = door::Machine::new(door::Closed).open(|_| door::Open);
//! let again = open.open(|_| door::Open); // cannot `open` a `Door` in state `door::Open`
//! # }
//! ```
//!
//! The derive generates a module (here `door`) next to the enum, so the enum must be declared
//! at module level, not inside a function body.
//!
//! The README describes the declaration, everything the derive generates and the errors it
//! reports.
#![warn(missing_docs, unreachable_pub)]

// The folders are the layers (see DESIGN.md): each uses only those listed before it.
#[cfg(feature = "durable")]
pub(crate) mod durable;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod runtime;
pub(crate) mod typestate;
pub mod views;

#[cfg(feature = "durable")]
pub use durable::client::{DurableClient, IfNameTaken, StartOptions, Started};
#[cfg(feature = "durable")]
pub use durable::error::DurableError;
#[cfg(feature = "durable")]
pub use durable::executor::{DurableExecutor, DurableOptions, Problem};
#[cfg(feature = "durable")]
pub use durable::monitor::{Alert, Monitor, Rule, Sink};
#[cfg(feature = "durable")]
pub use durable::ops::{Action, BulkOutcome, Operator, OpsError};
#[cfg(feature = "durable")]
pub use durable::store;
#[cfg(feature = "postgres")]
pub use durable::store::postgres::{PgOptions, PgStore};
#[cfg(feature = "sqlite")]
pub use durable::store::sqlite::{Durability, SqliteOptions, SqliteStore};
#[cfg(feature = "durable")]
pub use durable::store::{
    Cursor, ExecutionRecord, ExecutionStatus, ExecutionSummary, ListQuery, Page, Store, StoreError,
    WaitingFor,
};
#[cfg(feature = "runtime")]
pub use runtime::driver::Dispatch;
#[cfg(feature = "runtime")]
pub use runtime::executor::{Executor, ExecutorBuilder, Outcome, Status, UnknownState};
#[cfg(feature = "runtime")]
pub use runtime::fan_out::{Ended, Failed, Items};
pub use runtime::history::{EventKind, History, HistoryEvent};
#[cfg(feature = "runtime")]
pub use runtime::recorder::Observer;
pub use runtime::step::{Context, ExecutionId, IdempotencyKey, ParseIdError, StepError};
#[cfg(feature = "runtime")]
pub use runtime::token::{AsTaskToken, TaskToken, TokenError};
#[cfg(feature = "runtime")]
pub use runtime::waits::Waiting;
pub use typestate::definition::{
    Branch, Definition, FanOut, FanOutKind, StateInfo, StateKind, Transition, WaitPolicy,
};
pub use typestate::error::WrongState;
pub use typestate::policy::{Jitter, RetryPolicy};

// The README's examples compile as doctests (they use the durable stores and the export:
// `cargo test --workspace` enables them, as does `--all-features`).
#[cfg(all(doctest, feature = "sqlite", feature = "postgres", feature = "asl"))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Derives a typestate machine from an enum: see the crate documentation and the README.
pub use fsm_macros::Fsm;

/// A machine declared with `#[derive(Fsm)]`: the enum is its storable form, one variant per
/// state.
pub trait Fsm: Sized + 'static {
    /// The machine's graph.
    const DEFINITION: &'static Definition;

    /// Whether any state waits for a task token (`#[fsm(wait)]`): a constant, so that the
    /// executor's code for waits is compiled out of machines that have none.
    const WAITS: bool = false;

    /// The index in [`Definition::states`] of the state this value is in.
    fn state_index(&self) -> usize;

    /// The name of the state this value is in.
    fn state_name(&self) -> &'static str {
        Self::DEFINITION.states[self.state_index()].name
    }

    /// Whether this value is in a terminal state.
    fn is_terminal(&self) -> bool {
        Self::DEFINITION.states[self.state_index()]
            .kind
            .is_terminal()
    }
}

/// Items the generated code refers to. Not public API: no semver guarantees.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "runtime")]
    pub use crate::runtime::driver::{Attempt, Driver, Keep};
    #[cfg(feature = "runtime")]
    pub use crate::runtime::fan_out::{
        all_ended, branch_task, map, parallel, BranchData, BranchTask, Branches, FanFailure,
    };
    #[cfg(feature = "runtime")]
    pub use crate::Dispatch;
    pub use crate::{
        Context, Definition, Fsm, Jitter, RetryPolicy, StateInfo, StateKind, StepError, Transition,
        WrongState,
    };
    pub use core::future::Future;
    pub use core::time::Duration;

    /// A state with a step and no policies, in a generated definition: a call of a few
    /// tokens rather than a struct literal, which every build of a large machine parses again.
    #[inline]
    pub const fn step(name: &'static str) -> StateInfo {
        plain(name, StateKind::Step)
    }

    /// A terminal success state, in a generated definition.
    #[inline]
    pub const fn success(name: &'static str) -> StateInfo {
        plain(name, StateKind::Success)
    }

    /// A terminal failure state, in a generated definition.
    #[inline]
    pub const fn failure(name: &'static str) -> StateInfo {
        plain(name, StateKind::Failure)
    }

    const fn plain(name: &'static str, kind: StateKind) -> StateInfo {
        StateInfo {
            name,
            kind,
            retry: None,
            timeout: None,
            wait: None,
            fan_out: None,
        }
    }

    /// An event's edge in a generated definition.
    #[inline]
    pub const fn edge(from: usize, event: &'static str, to: usize) -> Transition {
        Transition {
            from,
            event,
            to,
            catch: false,
        }
    }

    /// The data of one state of machine `M`: the link between a generated state struct and
    /// its enum variant. (Generic over `M` rather than with associated items: at hundreds of
    /// states, every item per state is paid for on each build.)
    pub trait StateData<M>: Sized {
        /// Moves the data into its variant.
        fn into_machine(self) -> M;
        /// Moves the data out of its variant, or gives the value back in an error naming
        /// this state.
        fn from_machine(m: M) -> Result<Self, WrongState<M>>;
    }
}
