//! A state's policies as the executor applies them: the declaration's, with the builder's
//! overrides. Read by the step loop (`driver`: timeouts) and the executor (retries, routes).

use core::time::Duration;

use crate::RetryPolicy;

/// A state's policies, as the executor applies them.
#[derive(Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    /// How long a waiting state waits for its token.
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) has_catch: bool,
}

/// The policies a machine's definition declares for each of its states.
pub(crate) fn declared(def: &crate::Definition) -> impl ExactSizeIterator<Item = Policy> + '_ {
    def.states.iter().enumerate().map(|(i, s)| Policy {
        retry: s.retry.unwrap_or(RetryPolicy::NONE),
        timeout: s.timeout,
        wait_timeout: s.wait.and_then(|w| w.timeout),
        has_catch: def.transitions.iter().any(|t| t.catch && t.from == i),
    })
}
