//! The machine's graph as static data: `impl Fsm for Enum`.

use super::{lit, Src};
use crate::check::Graph;
use crate::names;

// By absolute path: a state may be called `Some` or `None`.
const SOME: &str = "::core::option::Option::Some";
const NONE: &str = "::core::option::Option::None";

pub(super) fn write(src: &mut Src, g: &Graph) {
    let k = src.krate.clone();
    let name = lit(&names::unraw(src.m.ident));
    if src.m.states.iter().any(|s| s.wait.is_some()) {
        src.write(format_args!(
            "#[automatically_derived] impl {k}::Fsm for __Enum {{ const WAITS: ::core::primitive::bool = true;"
        ));
    } else {
        src.write(format_args!(
            "#[automatically_derived] impl {k}::Fsm for __Enum {{"
        ));
    }
    src.write(format_args!(
        "const DEFINITION: &'static {k}::Definition = &{k}::Definition {{ name: {name}, states: &["
    ));
    for s in &src.m.states {
        // The kind as `StateKind` names it, and the `__private` constructor of a state of
        // that kind without policies.
        let (kind, plain) = match &s.terminal {
            None => ("Step", "step"),
            Some(t) if t.failure => ("Failure", "failure"),
            Some(_) => ("Success", "success"),
        };
        let name = lit(&names::unraw(s.ident));
        if s.retry.is_none() && s.timeout_ms.is_none() && s.wait.is_none() {
            // Most states: a call of a few tokens.
            src.write(format_args!("{k}::__private::{plain}({name}),"));
            continue;
        }
        let some = SOME;
        let duration = |ms: u64| format!("{some}({k}::__private::Duration::from_millis({ms}))");
        let retry = match &s.retry {
            None => NONE.to_owned(),
            Some(r) => format!(
                "{some}({k}::RetryPolicy {{ max_attempts: {}, interval: {k}::__private::Duration::from_millis({}), \
                 backoff_rate: {:?}, max_delay: {}, jitter: {k}::Jitter::{} }})",
                r.max_attempts,
                r.interval_ms,
                r.backoff_rate,
                r.max_delay_ms.map_or(NONE.to_owned(), duration),
                if r.jitter_full { "Full" } else { "None" },
            ),
        };
        let timeout = s
            .timeout_ms
            .as_ref()
            .map_or(NONE.to_owned(), |(_, ms)| duration(*ms));
        let wait = s.wait.as_ref().map_or(NONE.to_owned(), |w| {
            let timeout = w.timeout_ms.map_or(NONE.to_owned(), duration);
            format!("{some}({k}::WaitPolicy {{ timeout: {timeout} }})")
        });
        src.write(format_args!(
            "{k}::StateInfo {{ name: {name}, kind: {k}::StateKind::{kind}, retry: {retry}, timeout: {timeout}, wait: {wait} }},"
        ));
    }
    src.write(format_args!("], initial: {}, transitions: &[", g.initial));
    for e in &g.edges {
        let event = lit(&names::unraw(e.event));
        src.write(format_args!(
            "{k}::__private::edge({}, {event}, {}),",
            e.from, e.to
        ));
    }
    for c in &g.catches {
        let kind = lit(&c.kind);
        src.write(format_args!(
            "{k}::Transition {{ from: {}, event: {kind}, to: {}, catch: true }},",
            c.from, c.to
        ));
    }
    src.push("] }; #[inline] fn state_index(&self) -> ::core::primitive::usize { match self {");
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        src.write(format_args!("__Enum::{s} {{ .. }} => {i},"));
    }
    src.push("} } }");
}
