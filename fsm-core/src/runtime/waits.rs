//! Waiting states: the typed link between a waiting state and its completion, and where the
//! in-memory executor keeps the tokens its executions hand out.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::{ExecutionId, StepError, TaskToken, TokenError, WrongState};

/// A state declared `#[fsm(wait)]` in machine `M`: implemented by `#[derive(Fsm)]` for the
/// state structs of waiting states, and used by `complete::<State>(token, ...)` to give the
/// completion the typed state and take back only one of its next states.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a waiting state",
    label = "tokens complete waiting states only",
    note = "declare the state with `#[fsm(wait)]` to make its step hand out a task token"
)]
pub trait Waiting<M>: Sized {
    /// The typed state (`Machine<Self>`) the completion receives.
    type Typed;
    /// What the completion returns: the state's next states (`Machine<Target>`, or the
    /// state's `Next` enum, into which each next typed state converts).
    type Next;
    /// The state's name.
    const NAME: &'static str;

    /// The typed state, if `m` is in this state.
    #[doc(hidden)]
    fn typed(m: M) -> Result<Self::Typed, WrongState<M>>;

    /// The enum and the index of the transition taken.
    #[doc(hidden)]
    fn leave(next: Self::Next) -> (M, usize);
}

/// How a wait was answered.
pub(crate) enum Answer<M> {
    /// Completed: the next state and the transition to it.
    Completed(M, usize),
    /// Failed by the outside world.
    Failed(StepError),
}

/// A token handed out by an in-memory execution.
struct Slot<M> {
    execution: ExecutionId,
    step: u32,
    attempt: u32,
    /// A copy of the waiting state, for the completion.
    state: Option<M>,
    /// The answer, until the execution takes it.
    answer: Option<Answer<M>>,
    /// Wakes the execution once it waits.
    waker: Option<oneshot::Sender<Answer<M>>>,
    /// Why the token can no longer be used, once it cannot.
    closed: Option<TokenError>,
}

/// The tokens of an in-memory executor's executions, until those executions end.
pub(crate) struct Waits<M> {
    slots: Mutex<HashMap<u128, Slot<M>>>,
}

impl<M> Default for Waits<M> {
    fn default() -> Self {
        Waits {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<M> Waits<M> {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Slot<M>>> {
        // A panic while the lock was held cannot leave a slot half-written: every change is
        // one assignment.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a token handed out for a wait in `state`.
    pub(crate) fn open(&self, token: &TaskToken, state: M) {
        self.slots().insert(
            token.secret,
            Slot {
                execution: token.execution,
                step: token.step,
                attempt: token.attempt,
                state: Some(state),
                answer: None,
                waker: None,
                closed: None,
            },
        );
    }

    /// The answer to the token `secret`, now if it came, or a receiver that gets it.
    pub(crate) fn wait(&self, secret: u128) -> Result<Answer<M>, oneshot::Receiver<Answer<M>>> {
        let mut slots = self.slots();
        let (tx, rx) = oneshot::channel();
        match slots.get_mut(&secret) {
            Some(slot) => match slot.answer.take() {
                Some(answer) => Ok(answer),
                None => {
                    slot.waker = Some(tx);
                    Err(rx)
                }
            },
            // Cannot happen: the token was registered when it was handed out. A receiver that
            // never answers leaves the execution to its wait's timeout.
            None => Err(rx),
        }
    }

    /// Closes the token `secret` (its wait timed out, or its execution moved on); returns
    /// `false` if it had been answered meanwhile.
    pub(crate) fn close(&self, secret: u128, why: TokenError) -> bool {
        let mut slots = self.slots();
        match slots.get_mut(&secret) {
            Some(slot) if slot.closed.is_none() => {
                slot.closed = Some(why);
                slot.state = None;
                slot.waker = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets an ended execution's tokens.
    pub(crate) fn forget(&self, execution: ExecutionId) {
        self.slots().retain(|_, s| s.execution != execution);
    }

    /// Answers `token` with what `answer` makes of (a copy of) the waiting state, which must
    /// be `expected` if it is given. The answer is made outside the lock: if it panics, the token stays open
    /// and the panic goes on to the caller; of two answers made at once, the first to come
    /// back wins.
    pub(crate) fn answer(
        &self,
        token: &TaskToken,
        expected: Option<&'static str>,
        answer: impl FnOnce(M) -> Result<Answer<M>, TokenError>,
    ) -> Result<(), TokenError>
    where
        M: crate::Fsm + Clone,
    {
        let open = |slots: &mut HashMap<u128, Slot<M>>| -> Result<(), TokenError> {
            let slot = slots
                .get(&token.secret)
                .filter(|s| {
                    (s.execution, s.step, s.attempt) == (token.execution, token.step, token.attempt)
                })
                .ok_or(TokenError::Forged)?;
            match (&slot.closed, &slot.state) {
                (Some(why), _) => Err(why.clone()),
                (None, Some(state)) => match expected {
                    Some(expected) if state.state_name() != expected => {
                        Err(TokenError::WrongState {
                            expected,
                            waiting: state.state_name().to_owned(),
                        })
                    }
                    _ => Ok(()),
                },
                (None, None) => Err(TokenError::AlreadyUsed),
            }
        };
        let state = {
            let mut slots = self.slots();
            open(&mut slots)?;
            slots[&token.secret].state.clone()
        };
        let Some(state) = state else {
            return Err(TokenError::AlreadyUsed);
        };
        let answer = answer(state)?;
        let mut slots = self.slots();
        open(&mut slots)?;
        let Some(slot) = slots.get_mut(&token.secret) else {
            return Err(TokenError::Forged);
        };
        slot.closed = Some(TokenError::AlreadyUsed);
        slot.state = None;
        match slot.waker.take() {
            Some(waker) => {
                let _ = waker.send(answer);
            }
            None => slot.answer = Some(answer),
        }
        Ok(())
    }
}
