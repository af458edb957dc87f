"""A hand-written async loop over fsm-core's `Steps` handlers: the baseline for the executor.
It matches on `AnyState`, awaits the same handlers as the `fsm_core_async` column, gives each
step its own `Context` (attempt 1, the step's idempotency key), stops at the first error, and
puts the state through `step_barrier!` after every transition."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("fsm_core_async_column", os.path.join(os.path.dirname(__file__), "fsm_core_async.py"))
_executor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_executor)

NAME = "fsm_core_hand_async"
LABEL = "hand-written async loop over the same handlers"
ORDER = 9
DEPS = _executor.DEPS


def machine(s):
    return "\n".join(_executor.steps(s))


def driver(s):
    arms = []
    for i in range(s.n - 1):
        arms.append(f"                AnyState::S{i}(m) => match steps.s{i}(m, cx).await {{ Ok(next) => next.into(), Err(_) => return u64::MAX }},")
    arms.append(f"                AnyState::S{s.last}(m) => return m.0,")
    arms += [f"                AnyState::F{b}(m) => return !m.0 ^ {b}," for b in s.branches]
    return ("""    use fsm_core::ExecutionId;
    block_on(async move {
        let steps = &Bump;
        let execution = ExecutionId::from_u128(1);
        let mut state = Chain::S0(seed);
        let mut step = 0;
        loop {
            let cx = Context { execution, attempt: 1, step };
            step += 1;
            let next: Chain = match AnyState::from(state) {
""" + "\n".join(arms) + """
            };
            state = step_barrier!(next);
        }
    })""")
