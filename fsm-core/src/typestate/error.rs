//! Errors of the typestate layer.

use core::fmt;

/// Rehydrating a typed state from the enum failed: the stored value is in another state.
///
/// Returned by `TryFrom<Enum> for Machine<State>` (the way back from storage). Nothing is lost:
/// [`WrongState::into_inner`] gives the value back, and [`WrongState::found`] names the state
/// it is really in.
#[derive(Clone, PartialEq, Eq)]
pub struct WrongState<M> {
    expected: &'static str,
    found: &'static str,
    value: M,
}

impl<M: crate::Fsm> WrongState<M> {
    /// The error for `value`, which was expected to be in state `expected`.
    pub fn new(expected: &'static str, value: M) -> Self {
        WrongState {
            expected,
            found: value.state_name(),
            value,
        }
    }
}

impl<M> WrongState<M> {
    /// The state the caller asked for.
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The state the value is in.
    pub fn found(&self) -> &'static str {
        self.found
    }

    /// The value, unchanged.
    pub fn into_inner(self) -> M {
        self.value
    }
}

impl<M> fmt::Display for WrongState<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected state `{}`, found `{}`",
            self.expected, self.found
        )
    }
}

impl<M> fmt::Debug for WrongState<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrongState")
            .field("expected", &self.expected)
            .field("found", &self.found)
            .finish_non_exhaustive()
    }
}

impl<M> std::error::Error for WrongState<M> {}
