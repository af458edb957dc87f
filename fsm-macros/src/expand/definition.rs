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
    for (i, s) in src.m.states.iter().enumerate() {
        // The kind as `StateKind` names it, and the `__private` constructor of a state of
        // that kind without policies.
        let (kind, plain) = match &s.terminal {
            None => ("Step", "step"),
            Some(t) if t.failure => ("Failure", "failure"),
            Some(_) => ("Success", "success"),
        };
        let name = lit(&names::unraw(s.ident));
        if s.retry.is_none() && s.timeout_ms.is_none() && s.wait.is_none() && s.fan_out.is_none() {
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
        let fan_out = match &s.fan_out {
            None => NONE.to_owned(),
            Some(f) => {
                let fan_kind = match &f.map {
                    None => format!("{k}::FanOutKind::Parallel"),
                    Some(map) => {
                        let opt =
                            |v: Option<u64>| v.map_or(NONE.to_owned(), |n| format!("{some}({n})"));
                        format!(
                            "{k}::FanOutKind::Map {{ max_concurrency: {}, tolerated_failures: {}, tolerated_percent: {} }}",
                            map.max_concurrency,
                            opt(map.tolerated_failures),
                            opt(map.tolerated_percent)
                        )
                    }
                };
                let branches: Vec<String> = f
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(j, (name, _))| {
                        format!(
                            "{k}::Branch {{ name: {}, definition: <{} as {k}::Fsm>::DEFINITION }}",
                            lit(&names::unraw(name)),
                            src.branch_type(i, j)
                        )
                    })
                    .collect();
                format!(
                    "{some}(&{k}::FanOut {{ kind: {fan_kind}, branches: &[{}], compensate: {} }})",
                    branches.join(", "),
                    f.compensate
                )
            }
        };
        src.write(format_args!(
            "{k}::StateInfo {{ name: {name}, kind: {k}::StateKind::{kind}, retry: {retry}, timeout: {timeout}, wait: {wait}, fan_out: {fan_out} }},"
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

/// For each branch of a fanning-out state, spanned on the machine the user named: that it is
/// a machine, and one that does not wait for task tokens (a branch runs inside its parent's
/// step, where no one could answer them).
pub(super) fn fan_out_checks(src: &Src) -> proc_macro2::TokenStream {
    let k = &src.m.krate;
    let mut out = proc_macro2::TokenStream::new();
    for (i, s) in src.m.states.iter().enumerate() {
        let Some(f) = &s.fan_out else { continue };
        for (j, (name, path)) in f.branches.iter().enumerate() {
            let message = format!(
                "branch `{}` of state `{}` runs a machine with a waiting state (`#[fsm(wait)]`): a branch cannot wait for a task token; wait in the parent machine instead",
                names::unraw(name),
                names::unraw(s.ident)
            );
            let ty: proc_macro2::TokenStream = src.branch_type(i, j).parse().unwrap_or_default();
            let span = syn::spanned::Spanned::span(path);
            let ty = respan(ty, span);
            out.extend(quote::quote_spanned! {span=>
                const _: () = ::core::assert!(!<#ty as #k::Fsm>::WAITS, #message);
            });
        }
    }
    out
}

/// `tokens` with every token spanned at `span` (generated text carries no span of its own).
fn respan(tokens: proc_macro2::TokenStream, span: proc_macro2::Span) -> proc_macro2::TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}
