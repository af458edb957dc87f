//! Event methods, the sealed traits that say where each event is legal, and the `Next` enums
//! of branching states.

use proc_macro2::TokenStream;
use quote::{format_ident, quote_spanned};
use syn::Ident;

use super::{lit, Src};
use crate::ast::Machine;
use crate::check::{Edge, Graph};
use crate::names;

/// The events in order of first declaration, each with its edges (grouped by source state,
/// since edges are listed state by state).
fn events<'g>(g: &'g Graph) -> Vec<(&'g Ident, Vec<&'g Edge<'g>>)> {
    let mut out: Vec<(&Ident, Vec<&Edge>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for e in &g.edges {
        let i = *index.entry(names::unraw(e.event)).or_insert_with(|| {
            out.push((e.event, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(e);
    }
    out
}

/// Whether every state that has this event has one target for it: then the target is an
/// associated type of the event's trait, and no second trait is needed.
fn single_target(edges: &[&Edge]) -> bool {
    edges.windows(2).all(|w| w[0].from != w[1].from)
}

/// Writes the event traits, methods and `Next` enums, and returns the impls that say where
/// each event is legal (tokens, for their spans).
pub(super) fn write(src: &mut Src, g: &Graph) -> TokenStream {
    let events = events(g);
    src.push("/// Where each event is legal: implemented only here, for the declared transitions.\nmod __event {");
    for (event, edges) in &events {
        event_traits(src, event, edges);
    }
    src.push("} impl<S> Machine<S> {");
    for (event, edges) in &events {
        event_method(src, event, edges);
    }
    src.push("}");
    for from in 0..src.m.states.len() {
        next_enum(src, g, from);
    }
    spanned_impls(src.m, &events)
}

/// `ship` -> (`Ship`, `ShipTarget`).
fn trait_names(event: &Ident) -> (String, String) {
    let camel = names::event_trait(event);
    let target = format!("{camel}Target");
    (camel, target)
}

/// "`Paid` (to `Shipped`) and `Wrapped` (to `Shipped`)", for docs and diagnostics.
fn legal_in(m: &Machine, edges: &[&Edge]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < edges.len() {
        let from = edges[i].from;
        let targets: Vec<String> = edges[i..]
            .iter()
            .take_while(|e| e.from == from)
            .map(|e| format!("`{}`", m.states[e.to].ident))
            .collect();
        i += targets.len();
        out.push(format!(
            "`{}` (to {})",
            m.states[from].ident,
            targets.join(" | ")
        ));
    }
    match out.pop() {
        Some(last) if !out.is_empty() => format!("{} and {last}", out.join(", ")),
        Some(last) => last,
        None => String::new(),
    }
}

/// The sealed traits behind an event: `Ship`, implemented by the states that have the event,
/// and `ShipTarget<S>`, implemented by the targets of `ship` from `S`. Two traits, so that a
/// call on the wrong state fails on `Ship` alone, before the target is even known, and names
/// the event, the state and where the event is legal; the target bound goes through
/// `<S as Ship>::State`, so that rustc does not report it again for a state without the event.
///
/// An event with one target per state needs no second trait: `Ship::Target` names it, and a
/// closure that builds anything else is a plain type mismatch.
fn event_traits(src: &mut Src, event: &Ident, edges: &[&Edge]) {
    let (tr, target_tr) = trait_names(event);
    let e = src.m.ident.to_string();
    let note = lit(&format!(
        "`{event}` is legal only in {}",
        legal_in(src.m, edges)
    ));
    let message = lit(&format!("cannot `{event}` a `{e}` in state `{{Self}}`"));
    let label = lit(&format!("`{event}` is not an event of `{{Self}}`"));
    if single_target(edges) {
        src.write(format_args!(
            "#[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]\
             pub trait {tr} {{ type Target; }}"
        ));
        return;
    }
    let target_message = lit(&format!("`{event}` cannot lead from `{{S}}` to `{{Self}}`"));
    let target_label = lit(&format!(
        "`{{Self}}` is not a target of `{event}` from `{{S}}`"
    ));
    src.write(format_args!(
        "#[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]\
         pub trait {tr} {{ type State; }}\
         #[diagnostic::on_unimplemented(message = {target_message}, label = {target_label}, note = {note})]\
         pub trait {target_tr}<S> {{}}"
    ));
}

fn event_method(src: &mut Src, event: &Ident, edges: &[&Edge]) {
    let (tr, target_tr) = trait_names(event);
    let doc = lit(&format!(
        "Event `{event}`: legal only in {}.\n\n\
         `f` builds the target state's data from this state's data; the result is the typed \
         target. A branching event returns whichever of its targets `f` builds.",
        legal_in(src.m, edges)
    ));
    if single_target(edges) {
        src.write(format_args!(
            "#[doc = {doc}]\
             pub fn {event}<T, F: ::core::ops::FnOnce(S) -> T>(self, f: F) -> Machine<T>\
             where S: __event::{tr}<Target = T> {{\
               Machine {{ state: f(self.state) }}\
             }}"
        ));
        return;
    }
    src.write(format_args!(
        "#[doc = {doc}]\
         pub fn {event}<T, F: ::core::ops::FnOnce(S) -> T>(self, f: F) -> Machine<T>\
         where S: __event::{tr}, T: __event::{target_tr}<<S as __event::{tr}>::State> {{\
           Machine {{ state: f(self.state) }}\
         }}"
    ));
}

/// The impls that say where each event is legal. Built as tokens spanned on the declaration,
/// so that "the trait is implemented for `Paid`" points at the state and at the target as
/// written in `on(...)`.
fn spanned_impls(m: &Machine, events: &[(&Ident, Vec<&Edge>)]) -> TokenStream {
    let mut out = TokenStream::new();
    for (event, edges) in events {
        let camel = names::event_trait(event);
        let tr = format_ident!("{}", camel);
        let target_tr = format_ident!("{}Target", camel);
        let single = single_target(edges);
        for (i, e) in edges.iter().enumerate() {
            let from = m.states[e.from].ident;
            let to = m.states[e.to].ident;
            if single {
                out.extend(quote_spanned!(from.span()=> impl __event::#tr for #from { type Target = #to; }));
                continue;
            }
            // The first edge of each state also says that the state has the event.
            if i == 0 || edges[i - 1].from != e.from {
                out.extend(quote_spanned!(from.span()=> impl __event::#tr for #from { type State = #from; }));
            }
            out.extend(
                quote_spanned!(e.target.span()=> impl __event::#target_tr<#from> for #to {}),
            );
        }
    }
    out
}

/// The public types this file generates besides the typed state: the `Next` enums.
pub(super) fn public_names(m: &Machine, g: &Graph) -> Vec<String> {
    (0..m.states.len())
        .filter(|&from| g.edges_from(from).nth(1).is_some())
        .map(|from| format!("{}Next", m.states[from].ident))
        .collect()
}

/// What a state's step returns, and what its events lead to as one type: the typed target
/// when the state has one, its `Next` enum when it has several, nothing when it is terminal.
pub(super) enum NextType {
    Enum(String),
    // Read by the step generation.
    #[cfg_attr(not(feature = "steps"), allow(dead_code))]
    One {
        target: String,
        transition: usize,
    },
}

pub(super) fn next_type(src: &Src, g: &Graph, from: usize) -> Option<NextType> {
    let mut edges = g.edges_from(from);
    match (edges.next(), edges.next()) {
        (None, _) => None,
        (Some((transition, e)), None) => Some(NextType::One {
            target: src.state(e.to),
            transition,
        }),
        _ => Some(NextType::Enum(format!("{}Next", src.state(from)))),
    }
}

/// `PaidNext`: for a state with more than one target, one of its targets. Any of them
/// converts into it with `.into()`, so a branch chosen at run time has one type.
fn next_enum(src: &mut Src, g: &Graph, from: usize) {
    let Some(NextType::Enum(next)) = next_type(src, g, from) else {
        return;
    };
    let edges: Vec<(usize, &Edge)> = g.edges_from(from).collect();
    let (k, vis) = (src.krate.clone(), src.vis.clone());
    let state = src.state(from);
    let targets: Vec<String> = edges.iter().map(|(_, e)| src.state(e.to)).collect();
    let debug = if src.m.derives.iter().any(|d| d.is_ident("Debug")) {
        "#[derive(Debug)]"
    } else {
        ""
    };
    let doc = lit(&format!(
        "The states `{state}` can move to: {}. Each converts into this enum with `.into()`.",
        targets
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    src.write(format_args!(
        "#[doc = {doc}] {debug} #[allow(missing_docs)] {vis} enum {next} {{"
    ));
    for t in &targets {
        src.write(format_args!("{t}(Machine<{t}>),"));
    }
    src.write(format_args!(
        "}} impl {next} {{\
           /// The transition that leads here, from the machine's definition.\n\
           pub fn transition(&self) -> &'static {k}::Transition {{\
             &<__Enum as {k}::Fsm>::DEFINITION.transitions[self.__index()]\
           }}\
           #[doc(hidden)] #[inline] pub fn __index(&self) -> ::core::primitive::usize {{ match self {{"
    ));
    for (t, (i, _)) in targets.iter().zip(&edges) {
        src.write(format_args!("{next}::{t}(_) => {i},"));
    }
    src.write(format_args!(
        "}} }} }}\
         #[automatically_derived] impl ::core::convert::From<{next}> for __Enum {{\
           #[inline] fn from(n: {next}) -> Self {{ match n {{"
    ));
    for t in &targets {
        src.write(format_args!(
            "{next}::{t}(m) => <__Enum as ::core::convert::From<Machine<{t}>>>::from(m),"
        ));
    }
    src.push("} } }");
    for t in &targets {
        src.write(format_args!(
            "#[automatically_derived] impl ::core::convert::From<Machine<{t}>> for {next} {{\
               #[inline] fn from(m: Machine<{t}>) -> Self {{ {next}::{t}(m) }}\
             }}"
        ));
    }
}
