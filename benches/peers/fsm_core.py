"""fsm-core: #[derive(Fsm)] on a data-bearing enum; typed states Machine<S> with one
consuming event method per transition; branches return the state's Next enum."""

import os

# This repository's fsm-core; set FSM_CORE to measure another checkout.
FSM_CORE = os.environ.get("FSM_CORE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "fsm-core")))

NAME = "fsm_core"
LABEL = "fsm-core"
ORDER = 7
DEPS = {"fsm-core": '{ path = "' + FSM_CORE + '", default-features = false }'}


def declaration(s, derives="Fsm"):
    """The chain as a `#[derive(Fsm)]` enum, and its generated module in scope."""
    out = [f"#[derive({derives})]", "pub enum Chain {"]
    for i in range(s.n):
        if i == s.last:
            out.append(f"    #[fsm(terminal)] S{i}(u64),")
            continue
        init = "initial, " if i == 0 else ""
        targets = f"S{i+1} | F{i}" if s.is_branch(i) else f"S{i+1}"
        out.append(f"    #[fsm({init}on(t{i} => {targets}))] S{i}(u64),")
    for b in s.branches:
        out.append(f"    #[fsm(terminal(failure))] F{b}(u64),")
    out.append("}")
    out.append("use chain::*;")
    return out


def machine(s):
    out = ["use fsm_core::Fsm;"] + declaration(s)
    out.append(f"#[inline] fn finish_last(m: Machine<S{s.last}>) -> u64 {{ m.0 }}")
    # A branch as the caller writes it: the guard decides which target the event builds.
    for b in s.branches:
        out.append(f"#[inline] fn branch{b}(m: Machine<S{b}>) -> Result<Machine<S{b+1}>, Machine<F{b}>> {{ "
                   f"if m.0 == SENTINEL {{ Err(m.t{b}(|x| F{b}(x.0))) }} else {{ Ok(m.t{b}(|x| S{b+1}(x.0.wrapping_add(1)))) }} }}")
    return "\n".join(out)


def driver(s):
    out = ["    let m = Machine::new(S0(seed));"]
    for i in range(s.n - 1):
        if s.is_branch(i):
            out.append(f"    let m = match branch{i}(m) {{ Ok(m) => step_barrier!(m), Err(f) => return !f.0 ^ {i} }};")
        else:
            out.append(f"    let m = step_barrier!(m.t{i}(|x| S{i+1}(x.0.wrapping_add(1))));")
    out.append("    finish_last(m)")
    return "\n".join(out)
