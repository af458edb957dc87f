//! The machine's graph as static data, emitted by `#[derive(Fsm)]` at compile time.

use core::fmt;
use core::time::Duration;

use crate::RetryPolicy;

/// How an execution relates to a state: whether it goes on from there, and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A state with a step: the execution leaves it through one of its events.
    Step,
    /// A terminal state where the execution ends successfully (`#[fsm(terminal)]`).
    Success,
    /// A terminal state where the execution ends as failed (`#[fsm(terminal(failure))]`).
    Failure,
}

impl StateKind {
    /// Whether an execution ends in a state of this kind.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, StateKind::Step)
    }
}

/// One state of a [`Definition`], with the policies declared for its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateInfo {
    /// The variant's name, e.g. `"Paid"`.
    pub name: &'static str,
    /// Whether the state is terminal, and how.
    pub kind: StateKind,
    /// How the state's step is retried (`#[fsm(retry(...))]`); `None` means no retries.
    pub retry: Option<RetryPolicy>,
    /// How long one attempt of the state's step may take (`#[fsm(timeout_ms = ...)]`).
    pub timeout: Option<Duration>,
    /// Whether the state waits for the outside world (`#[fsm(wait)]`): its step hands out a
    /// task token, and the execution goes on when the token is completed or failed.
    pub wait: Option<WaitPolicy>,
}

/// How a waiting state waits (`#[fsm(wait(timeout_ms = ...))]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaitPolicy {
    /// How long after its step the wait fails with an error of kind
    /// [`StepError::TIMEOUT`](crate::StepError::TIMEOUT), if no one completes or fails its
    /// token; `None` waits for ever.
    pub timeout: Option<Duration>,
}

/// One edge of the graph: leaving `from` through `event` leads to `to`.
///
/// `from` and `to` index [`Definition::states`]. An edge declared with
/// `#[fsm(catch(kind => Target))]` has `catch` set and the error kind it matches as its
/// `event` (`"*"` for any error): it is taken when the step fails for good with that error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// Index of the source state.
    pub from: usize,
    /// The event's name, e.g. `"ship"`; for a catch edge, the error kind.
    pub event: &'static str,
    /// Index of the target state.
    pub to: usize,
    /// Whether this edge routes a failed step rather than an event.
    pub catch: bool,
}

/// The graph of a machine, as declared: states, the initial state, terminal states and
/// transitions.
///
/// Every machine's definition is a `'static` value reachable as [`Fsm::DEFINITION`]; the
/// derive has already checked it (one initial state, every state reachable, a terminal state
/// reachable from every state), so readers of a definition can rely on those rules.
///
/// States appear in declaration order; transitions are grouped by source state in
/// declaration order, then by event, then by target as written.
///
/// [`Fsm::DEFINITION`]: crate::Fsm::DEFINITION
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Definition {
    /// The machine's name: the enum's identifier.
    pub name: &'static str,
    /// Every state, in declaration order.
    pub states: &'static [StateInfo],
    /// Index of the initial state in [`Definition::states`].
    pub initial: usize,
    /// Every transition.
    pub transitions: &'static [Transition],
}

impl Definition {
    /// The index of the state called `name`, if there is one.
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name == name)
    }

    /// The initial state.
    pub fn initial_state(&self) -> &'static StateInfo {
        &self.states[self.initial]
    }

    /// The transitions that leave state `from`, in declaration order.
    pub fn transitions_from(&self, from: usize) -> impl Iterator<Item = &'static Transition> {
        self.transitions.iter().filter(move |t| t.from == from)
    }

    /// The transition from `from` to `to`, if the machine has one.
    ///
    /// A state reaches each target through at most one event (the derive enforces this), so
    /// the answer is unique.
    pub fn transition(&self, from: usize, to: usize) -> Option<&'static Transition> {
        self.transitions
            .iter()
            .find(|t| t.from == from && t.to == to)
    }

    /// A fingerprint of the graph: the machine's name, its states (names and kinds), its
    /// initial state and its transitions, as 16 hexadecimal digits (FNV-1a). Policies
    /// (retries, timeouts) are not part of it: changing them does not change what a stored
    /// execution means. Durable stores keep it per execution, to notice a definition that
    /// changed under a stored execution.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.text(self.name);
        for s in self.states {
            h.text(s.name);
            h.byte(s.kind as u8);
            h.byte(u8::from(s.wait.is_some()));
        }
        h.word(self.initial as u64);
        for t in self.transitions {
            h.word(t.from as u64);
            h.text(t.event);
            h.word(t.to as u64);
            h.byte(u8::from(t.catch));
        }
        format!("{:016x}", h.0)
    }

    /// The terminal states, in declaration order.
    pub fn terminals(&self) -> impl Iterator<Item = &'static StateInfo> {
        self.states.iter().filter(|s| s.kind.is_terminal())
    }
}

impl fmt::Display for Definition {
    /// One line per transition, `From --event--> To`, under the machine's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (initial: {})", self.name, self.initial_state().name)?;
        for t in self.transitions {
            let (from, to) = (self.states[t.from].name, self.states[t.to].name);
            if t.catch {
                writeln!(f, "  {from} --error({})--> {to}", t.event)?;
            } else {
                writeln!(f, "  {from} --{}--> {to}", t.event)?;
            }
        }
        Ok(())
    }
}

/// FNV-1a, 64 bits: a stable hash (std's hashers may change between releases).
struct Fnv(u64);

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }

    fn word(&mut self, w: u64) {
        w.to_le_bytes().into_iter().for_each(|b| self.byte(b));
    }

    /// Text, with its length first so that `("ab", "c")` and `("a", "bc")` differ.
    fn text(&mut self, s: &str) {
        self.word(s.len() as u64);
        s.bytes().for_each(|b| self.byte(b));
    }
}
