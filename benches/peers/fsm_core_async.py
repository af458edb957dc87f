"""fsm-core's executor (history off): the same derive, with a Steps impl per state, driven by
Executor::run under the harness's no-op-waker block_on."""

import importlib.util
import os

# The declaration is the typestate column's, loaded from the file beside this one.
_spec = importlib.util.spec_from_file_location("fsm_core_column", os.path.join(os.path.dirname(__file__), "fsm_core.py"))
_typestate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_typestate)

# This repository's fsm-core; set FSM_CORE to measure another checkout.
FSM_CORE = os.environ.get("FSM_CORE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "fsm-core")))

NAME = "fsm_core_async"
LABEL = "fsm-core (executor)"
ORDER = 8
DEPS = {"fsm-core": '{ path = "' + FSM_CORE + '" }'}


def steps(s):
    """The declaration and a `Steps` impl whose handlers add one (and branch on SENTINEL)."""
    out = ["use fsm_core::{Fsm, Context, StepError, Executor};"] + _typestate.declaration(s, "Fsm, Clone")
    out.append("pub struct Bump;")
    out.append("impl Steps for Bump {")
    for i in range(s.n - 1):
        if s.is_branch(i):
            out.append(f"    async fn s{i}(&self, m: Machine<S{i}>, _: Context) -> Result<S{i}Next, StepError> {{ Ok(if m.0 == SENTINEL {{ m.t{i}(|x| F{i}(x.0)).into() }} else {{ m.t{i}(|x| S{i+1}(x.0.wrapping_add(1))).into() }}) }}")
        else:
            out.append(f"    async fn s{i}(&self, m: Machine<S{i}>, _: Context) -> Result<Machine<S{i+1}>, StepError> {{ Ok(m.t{i}(|x| S{i+1}(x.0.wrapping_add(1)))) }}")
    out.append("}")
    return out


def machine(s):
    out = steps(s)
    out.append("static EXECUTOR: std::sync::OnceLock<Executor<Chain, Bump>> = std::sync::OnceLock::new();")
    return "\n".join(out)


def driver(s):
    arms = [f"        Chain::S{s.last}(x) => x,"]
    arms += [f"        Chain::F{b}(x) => !x ^ {b}," for b in s.branches]
    arms.append("        _ => unreachable!(),")
    return ("""    let executor = EXECUTOR.get_or_init(|| Executor::builder(Bump).record_history(false).build());
    let outcome = block_on(executor.run(Chain::S0(seed)));
    let state = step_barrier!(outcome.state);
    match state {
""" + "\n".join(arms) + """
    }""")
