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

/// Writes the event traits, methods, `Next` enums and choice enums, and returns the impls
/// that say where each event is legal (tokens, for their spans).
///
/// The traits live in modules of their own, so that their names cannot meet: `__event::Ship`
/// says which states have `ship` (and, for an event with one target per state, where it
/// leads), `__target::Charge` which states the branching event `charge` leads to from each,
/// and `__next::Paid` which states the step of `Paid` may return.
pub(super) fn write(src: &mut Src, g: &Graph) -> TokenStream {
    let events = events(g);
    src.push("/// Where each event is legal: implemented only here, for the declared transitions.\nmod __event {");
    for (event, edges) in &events {
        event_trait(src, event, edges);
    }
    src.push("} /// Where each event leads.\nmod __target {");
    for (event, edges) in &events {
        target_trait(src, event, edges);
    }
    src.push("}");
    initial_trait(src, g);
    src.push("impl<S> Machine<S> {");
    for (event, edges) in &events {
        event_method(src, event, edges);
    }
    src.push("} /// What each step may return.\nmod __next {");
    for from in 0..src.m.states.len() {
        next_trait(src, g, from);
    }
    src.push("}");
    for from in 0..src.m.states.len() {
        next_enum(src, g, from);
    }
    choice_enums(src, g);
    spanned_impls(src.m, &events)
}

/// `Machine::new` takes the initial state only, and says so when given another.
fn initial_trait(src: &mut Src, g: &Graph) {
    let (e, init) = (src.m.ident.to_string(), src.state(g.initial));
    let message = lit(&format!(
        "executions of `{e}` start in `{init}`, not in `{{Self}}`"
    ));
    let label = lit(&format!("`Machine::new` takes the initial state, `{init}`"));
    let note = lit("every other state is reached through the events that lead to it");
    src.write(format_args!(
        "mod __initial {{\
           #[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]\
           pub trait InitialState {{}}\
           impl InitialState for super::{init} {{}}\
         }}"
    ));
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
            .map(|e| format!("`{}`", names::unraw(m.states[e.to].ident)))
            .collect();
        i += targets.len();
        out.push(format!(
            "`{}` (to {})",
            names::unraw(m.states[from].ident),
            targets.join(" | ")
        ));
    }
    match out.pop() {
        Some(last) if !out.is_empty() => format!("{} and {last}", out.join(", ")),
        Some(last) => last,
        None => String::new(),
    }
}

/// `__event::Ship`: implemented by the states that have the event `ship`, so that a call on
/// the wrong state fails on it alone, before the target is even known, and names the event,
/// the state and where the event is legal. Its associated type is the target when every state
/// that has the event has one target for it; otherwise it is the state itself, which the
/// target bound goes through, so that rustc does not report the target again for a state
/// without the event.
fn event_trait(src: &mut Src, event: &Ident, edges: &[&Edge]) {
    let tr = names::event_trait(event);
    let e = src.m.ident.to_string();
    let event = names::unraw(event);
    let note = lit(&format!(
        "`{event}` is legal only in {}",
        legal_in(src.m, edges)
    ));
    let message = lit(&format!("cannot `{event}` a `{e}` in state `{{Self}}`"));
    let label = lit(&format!("`{event}` is not an event of `{{Self}}`"));
    let assoc = if single_target(edges) {
        "Target"
    } else {
        "State"
    };
    src.write(format_args!(
        "#[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]\
         pub trait {tr} {{ type {assoc}; }}"
    ));
}

/// `__target::Charge`: what the closure given to the branching event `charge` may build:
/// `Charge<S>` is implemented by each target of `charge` from `S`, and by the choice enum of
/// `S` and `charge`. An event with one target per state has no such trait: its
/// `__event` trait's `Target` is the one state the closure may build.
fn target_trait(src: &mut Src, event: &Ident, edges: &[&Edge]) {
    if single_target(edges) {
        // The event's own trait names the target (`S: __event::Ship<Target = T>`): a closure
        // that builds another state is a type mismatch on its body, which rustc reports there.
        return;
    }
    let tr = names::event_trait(event);
    let event = names::unraw(event);
    let note = lit(&format!(
        "`{event}` is legal only in {}",
        legal_in(src.m, edges)
    ));
    let message = lit(&format!("`{event}` cannot lead from `{{S}}` to `{{Self}}`"));
    let label = lit(&format!(
        "`{{Self}}` is not a target of `{event}` from `{{S}}`"
    ));
    src.write(format_args!(
        "#[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]\
         pub trait {tr}<S> {{}}"
    ));
}

fn event_method(src: &mut Src, event: &Ident, edges: &[&Edge]) {
    let tr = names::event_trait(event);
    let single = single_target(edges);
    let choice = if single {
        ""
    } else {
        " A branching event returns whichever of its targets `f` builds; to choose the target \
         inside `f`, build the choice enum `choice::<event>::<state>` (`choice::charge::Reserved`), \
         whose typed state converts into the state's `Next` enum."
    };
    let doc = lit(&format!(
        "Event `{}`: legal only in {}.\n\n\
         `f` builds the target state's data from this state's data; the result is the typed \
         target.{choice}",
        names::unraw(event),
        legal_in(src.m, edges)
    ));
    // One target per state: the event's trait says which; several: the target's trait says
    // which states it is a target of.
    let bounds = if single {
        format!("S: __event::{tr}<Target = T>")
    } else {
        format!("S: __event::{tr}, T: __target::{tr}<<S as __event::{tr}>::State>")
    };
    src.write(format_args!(
        "#[doc = {doc}]\
         pub fn {event}<T, F: __FnOnce(S) -> T>(self, f: F) -> Machine<T>\
         where {bounds} {{\
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
        let tr = format_ident!("{}", names::event_trait(event));
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
            out.extend(quote_spanned!(e.target.span()=> impl __target::#tr<#from> for #to {}));
        }
    }
    out
}

/// The branching events of state `from`: for each, the event and the targets' names.
fn choices<'g>(m: &Machine, g: &'g Graph, from: usize) -> Vec<(&'g Ident, Vec<String>)> {
    let mut out: Vec<(&Ident, Vec<String>)> = Vec::new();
    for (_, e) in g.edges_from(from) {
        let target = m.states[e.to].ident.to_string();
        match out
            .iter_mut()
            .find(|(event, _)| names::same(event, e.event))
        {
            Some((_, targets)) => targets.push(target),
            None => out.push((e.event, vec![target])),
        }
    }
    out.retain(|(_, targets)| targets.len() > 1);
    out
}

/// `choice::charge::Reserved`: the targets of a branching event from one state, as data, for
/// a closure that chooses one at run time: `order.charge(|r| if ok {
/// choice::charge::Reserved::Paid(..) } else { choice::charge::Reserved::Declined(..) })`.
/// Only the event's targets are variants, and the typed state it gives converts into the
/// state's `Next` enum.
///
/// The machine's module gets one module `choice`, holding a module per branching event named
/// exactly like the event, holding an enum per state the event branches from, named exactly
/// like the state. An event's name only ever meets other events' names, so no event can make
/// a choice enum's name collide with another generated type (names built by joining would:
/// `Reserved` + `next` is the `Next` enum's `ReservedNext`, and `A` + `b_c` is `AB` + `c`).
/// The module `errors`: a constant per error kind the machine's `catch` routes name, so that a
/// step raises `StepError::fatal(errors::GATEWAY_UNAVAILABLE, ..)` and a misspelt kind does
/// not compile (a free string still works, for kinds no route names). Each constant is
/// spanned on the kind in the declaration, where rustc's "similarly named constant defined
/// here" points.
pub(super) fn error_module(m: &Machine) -> TokenStream {
    let kinds = names::error_kinds(m);
    let Some((first, ..)) = kinds.first() else {
        return TokenStream::new();
    };
    let (module_vis, vis) = (&m.inner_vis, &m.typed_vis);
    let doc = format!(
        "The error kinds the `catch` routes of [`{0}`](super::{0}) name, as constants: a step \
         that fails with one (`StepError::fatal({1}::{2}, ..)`) is routed, and a misspelt \
         one does not compile.",
        m.ident,
        names::ERRORS,
        names::error_const(first),
    );
    let consts = kinds.iter().map(|(kind, span, states)| {
        let states: Vec<String> = states
            .iter()
            .map(|s| format!("`{}`", names::unraw(s)))
            .collect();
        let doc = format!("`{kind}`: routed by `catch` on {}.", states.join(", "));
        let name = format_ident!("{}", names::error_const(kind), span = *span);
        quote_spanned! {*span=>
            #[doc = #doc]
            #vis const #name: &::core::primitive::str = #kind;
        }
    });
    let module = format_ident!("{}", names::ERRORS);
    quote::quote! {
        #[doc = #doc]
        #module_vis mod #module {
            #(#consts)*
        }
    }
}

fn choice_enums(src: &mut Src, g: &Graph) {
    let m = src.m;
    // Each branching event, with the states it branches from and their targets.
    type Branches = Vec<(usize, Vec<String>)>;
    let mut modules: Vec<(&Ident, Branches)> = Vec::new();
    for from in 0..m.states.len() {
        for (event, targets) in choices(m, g, from) {
            match modules.iter_mut().find(|(e, _)| names::same(e, event)) {
                Some((_, states)) => states.push((from, targets)),
                None => modules.push((event, vec![(from, targets)])),
            }
        }
    }
    if modules.is_empty() {
        return;
    }
    let module_vis = src.outer_vis.clone();
    let (event_vis, enum_vis) = (m.typed_vis.to_string(), m.choice_vis.to_string());
    let derives = std_derives(m);
    let names = if derives.is_empty() {
        ""
    } else {
        "#[allow(unused_imports)] use super::super::*;"
    };
    let doc = lit(&format!(
        "The choice enums of the machine's branching events: `choice::<event>::<state>`, the \
         targets of `<event>` from `<state>` (for example `{}`).",
        modules
            .first()
            .map(|(e, states)| format!("choice::{}::{}", names::unraw(e), src.state(states[0].0)))
            .unwrap_or_default()
    ));
    src.outer_write(format_args!(
        "#[doc = {doc}] {module_vis} mod {} {{",
        names::CHOICE
    ));
    for (event, states) in modules {
        let shown = names::unraw(event);
        let doc = lit(&format!(
            "The choice enums of the branching event `{shown}`, one per state it leaves from."
        ));
        // An event's name may be in any case; the module is named exactly like it. The
        // variants name their data by path; the derives are the only names resolved here,
        // as in the enum's module. Without derives the module imports nothing: a glob of
        // the machine's module (every state) costs rustc a binding per name per module,
        // 8% of a touch rebuild at 200 states with 39 branching events.
        src.outer_write(format_args!(
            "#[doc = {doc}] #[allow(non_snake_case)] {event_vis} mod {event} {{{names}"
        ));
        for (from, targets) in &states {
            let state = src.state(*from);
            let name = format!("{}::{event}::{state}", names::CHOICE);
            let next = format!("{state}Next");
            let tr = names::event_trait(event);
            let listed: Vec<String> = targets.iter().map(|t| format!("`{t}`")).collect();
            let doc = lit(&format!(
                "The targets of `{shown}` from `{state}`: {}. Return one from the closure given \
                 to `{shown}` to choose the target at run time; the typed state it gives \
                 converts into [`{next}`](super::super::{next}) with `.into()`.",
                listed.join(", "),
            ));
            src.outer_write(format_args!(
                "#[doc = {doc}] {derives} #[allow(missing_docs)] {enum_vis} enum {state} {{"
            ));
            // The enum is named like the state it leaves from, which may also be a target:
            // the data is the machine module's.
            for t in targets {
                src.outer_write(format_args!("{t}(super::super::{t}),"));
            }
            src.outer.push('}');
            src.write(format_args!(
                "impl __target::{tr}<{state}> for {name} {{}}\
                 impl __next::{state} for {name} {{\
                   #[inline] fn __wrap(m: Machine<Self>) -> {next} {{ match m.state {{"
            ));
            for t in targets {
                src.write(format_args!(
                    "{name}::{t}(state) => {next}::{t}(Machine {{ state }}),"
                ));
            }
            src.push("} } }");
        }
        src.outer.push('}');
    }
    src.outer.push('}');
}

/// The standard derives among those the state structs get (`#[fsm(derive(...))]`), as the
/// user named them, for the choice enums, which hold state data. Like the state structs, the
/// choice enums are defined in the machine's module, where `Machine`'s field is private, so a
/// derive runs there whatever it resolves to.
fn std_derives(m: &Machine) -> String {
    const STD: &[&str] = &[
        "Debug",
        "Clone",
        "Copy",
        "PartialEq",
        "Eq",
        "PartialOrd",
        "Ord",
        "Hash",
    ];
    let paths: Vec<String> = m
        .derives
        .iter()
        .filter(|d| STD.iter().any(|name| d.is_ident(name)))
        .map(|d| quote::ToTokens::to_token_stream(d).to_string())
        .collect();
    if paths.is_empty() {
        String::new()
    } else {
        format!("#[derive({})]", paths.join(", "))
    }
}

/// The user's `Debug` derive, as the user named it, for the enums that hold typed states
/// (`Machine<S>` is `Debug` when `S` is). These enums are defined in the machine's module, like
/// the state structs, so whatever `Debug` resolves to runs where `Machine`'s field is private.
pub(super) fn debug_derive(m: &Machine) -> String {
    match m.derives.iter().find(|d| d.is_ident("Debug")) {
        Some(debug) => format!("#[derive({})]", quote::ToTokens::to_token_stream(debug)),
        None => String::new(),
    }
}

/// `__next::Paid`: the states the step of `Paid` may return, each of which converts into
/// `PaidNext`. A step that returns another state is told which ones it may return.
fn next_trait(src: &mut Src, g: &Graph, from: usize) {
    let Some(NextType::Enum(next)) = next_type(src, g, from) else {
        return;
    };
    let state = src.state(from);
    let shown = names::unraw(src.m.states[from].ident);
    let targets: Vec<String> = g
        .edges_from(from)
        .map(|(_, e)| {
            let to = names::unraw(src.m.states[e.to].ident);
            format!("`{to}` (by `{}`)", names::unraw(e.event))
        })
        .collect();
    let message = lit(&format!("the step of `{shown}` cannot move to `{{Self}}`"));
    let label = lit(&format!("`{{Self}}` is not a next state of `{shown}`"));
    let note = lit(&format!(
        "the step of `{shown}` returns one of {}",
        targets.join(", ")
    ));
    src.write(format_args!(
        "#[diagnostic::on_unimplemented(message = {message}, label = {label}, note = {note})]         pub trait {state}: ::core::marker::Sized {{           #[doc(hidden)] fn __wrap(m: super::Machine<Self>) -> super::{next};         }}"
    ));
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
    let (k, vis) = (src.krate.clone(), src.outer_vis.clone());
    let state = src.state(from);
    let targets: Vec<String> = edges.iter().map(|(_, e)| src.state(e.to)).collect();
    let debug = debug_derive(src.m);
    let doc = lit(&format!(
        "The states `{state}` can move to: {}. Each converts into this enum with `.into()`.",
        targets
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    src.outer_write(format_args!(
        "#[doc = {doc}] {debug} #[allow(missing_docs)] {vis} enum {next} {{"
    ));
    for t in &targets {
        src.outer_write(format_args!("{t}(Machine<{t}>),"));
    }
    src.outer.push('}');
    src.write(format_args!(
        "impl {next} {{\
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
            "{next}::{t}(m) => __StateData::into_machine(m.state),"
        ));
    }
    src.push("} } }");
    // Each next state converts through `__next`, whose diagnostic lists the next states.
    src.write(format_args!(
        "#[automatically_derived] impl<__T: __next::{state}> ::core::convert::From<Machine<__T>> for {next} {{\
           #[inline] fn from(m: Machine<__T>) -> Self {{ <__T as __next::{state}>::__wrap(m) }}\
         }}"
    ));
    for t in &targets {
        src.write(format_args!(
            "impl __next::{state} for {t} {{\
               #[inline] fn __wrap(m: Machine<Self>) -> {next} {{ {next}::{t}(m) }}\
             }}"
        ));
    }
}
