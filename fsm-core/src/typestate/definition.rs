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
    /// Whether the state fans out (`#[fsm(parallel(...))]` or `#[fsm(map(...))]`): its step
    /// starts branches, each an execution of a machine of its own, and its join leaves the
    /// state once every branch has ended.
    pub fan_out: Option<&'static FanOut>,
}

/// How a state fans out: the machines its branches run, and how they are joined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FanOut {
    /// A fixed set of branches, or one branch per item.
    pub kind: FanOutKind,
    /// The branches as declared: for a Parallel state each branch's name and machine, in
    /// order; for a Map state one entry, the machine each item runs (named `"item"`).
    pub branches: &'static [Branch],
    /// Whether a branch that had succeeded is compensated when the state fails
    /// (`compensate`): its compensation step runs before the state's error routes apply.
    pub compensate: bool,
}

/// The two ways a state fans out, as Amazon States Language's `Parallel` and `Map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FanOutKind {
    /// Every branch runs, at once; one that fails fails the state.
    Parallel,
    /// One branch per item the state's step returns.
    Map {
        /// How many items run at once; `0` means no limit (ASL's `MaxConcurrency`).
        max_concurrency: u32,
        /// How many items may fail without failing the state (ASL's
        /// `ToleratedFailureCount`), if set.
        tolerated_failures: Option<u32>,
        /// What percentage of the items may fail without failing the state (ASL's
        /// `ToleratedFailurePercentage`), if set. With both set, the state fails when
        /// either is exceeded; with neither, at the first failure.
        tolerated_percent: Option<u8>,
    },
}

impl FanOutKind {
    /// Whether `failed` failures out of `total` items are more than a Map tolerates
    /// (any failure, for a Parallel state).
    pub fn too_many_failures(&self, failed: usize, total: usize) -> bool {
        match *self {
            FanOutKind::Parallel => failed > 0,
            FanOutKind::Map {
                tolerated_failures,
                tolerated_percent,
                ..
            } => {
                if tolerated_failures.is_none() && tolerated_percent.is_none() {
                    return failed > 0;
                }
                let over_count = tolerated_failures.is_some_and(|n| failed > n as usize);
                let over_percent =
                    tolerated_percent.is_some_and(|p| failed * 100 > usize::from(p) * total);
                over_count || over_percent
            }
        }
    }

    /// Whether the join sees failed items (a Map that tolerates some).
    pub fn tolerates(&self) -> bool {
        matches!(
            self,
            FanOutKind::Map { tolerated_failures, tolerated_percent, .. }
                if tolerated_failures.is_some() || tolerated_percent.is_some()
        )
    }
}

/// One branch of a [`FanOut`]: its name and the machine it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Branch {
    /// The branch's name as declared (`parallel(customer = Notify, ...)`), `"item"` for a
    /// Map's items.
    pub name: &'static str,
    /// The machine the branch runs.
    pub definition: &'static Definition,
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
            if let Some(fan) = s.fan_out {
                // The branches' machines, by name and fingerprint: a branch whose graph
                // changed changes what a stored execution's fan-out means.
                h.byte(matches!(fan.kind, FanOutKind::Map { .. }) as u8 + 1);
                for b in fan.branches {
                    h.text(b.name);
                    h.text(&b.definition.fingerprint());
                }
            }
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
