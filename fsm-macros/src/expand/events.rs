//! Event methods, the sealed traits that say where each event is legal, and the `Next` enums
//! of branching states.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;

use crate::ast::Machine;
use crate::check::{Edge, Graph};
use crate::names;

pub(super) fn expand(m: &Machine, g: &Graph) -> TokenStream {
    // Events in order of first declaration, each with its edges.
    let mut events: BTreeMap<String, (usize, &Ident, Vec<&Edge>)> = BTreeMap::new();
    for (i, e) in g.edges.iter().enumerate() {
        let entry = events.entry(e.event.to_string()).or_insert((i, e.event, Vec::new()));
        entry.2.push(e);
    }
    let mut events: Vec<_> = events.into_values().collect();
    events.sort_by_key(|(first, _, _)| *first);

    let traits = events.iter().map(|(_, event, edges)| event_trait(m, event, edges));
    let methods = events.iter().map(|(_, event, edges)| event_method(m, event, edges));
    let impls = g.edges.iter().enumerate().map(|(i, e)| {
        let from = m.states[e.from].ident;
        let to = m.states[e.to].ident;
        let (tr, target_tr) = trait_idents(e.event);
        // The first edge of each (state, event) also says that the state has the event.
        let first = i == 0 || g.edges[i - 1].from != e.from || g.edges[i - 1].event != e.event;
        // Spanned on the user's tokens, so that "the trait is implemented for `Paid`" points
        // at the declaration.
        let has = first.then(|| quote_spanned!(from.span()=> impl __event::#tr for #from { type State = #from; }));
        let target = quote_spanned!(e.target.span()=> impl __event::#target_tr<#from> for #to {});
        quote!(#has #target)
    });
    let nexts = (0..m.states.len()).filter_map(|i| next_enum(m, g, i));
    quote! {
        /// Where each event is legal: implemented only here, for the declared transitions.
        mod __event {
            #(#traits)*
        }
        impl<S> Machine<S> {
            #(#methods)*
        }
        #(#impls)*
        #(#nexts)*
    }
}

/// `ship` -> (`Ship`, `ShipTarget`).
fn trait_idents(event: &Ident) -> (Ident, Ident) {
    let camel = names::camel_case(&event.to_string());
    (format_ident!("{}", camel), format_ident!("{}Target", camel))
}

/// `from` `Paid` to `Shipped`, for docs and diagnostics.
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
        out.push(format!("`{}` (to {})", m.states[from].ident, targets.join(" | ")));
    }
    match out.len() {
        1 => out.remove(0),
        _ => {
            let last = out.pop().unwrap_or_default();
            format!("{} and {}", out.join(", "), last)
        }
    }
}

/// The sealed traits behind an event: `Ship`, implemented by the states that have the event,
/// and `ShipTarget<S>`, implemented by the targets of `ship` from `S`. Two traits, so that a
/// call on the wrong state fails on `Ship` alone, before the target is even known, and names
/// the event, the state and where the event is legal; the target bound goes through
/// `<S as Ship>::State`, so that rustc does not report it again for a state without the event.
fn event_trait(m: &Machine, event: &Ident, edges: &[&Edge]) -> TokenStream {
    let (tr, target_tr) = trait_idents(event);
    let legal = legal_in(m, edges);
    let message = format!("cannot `{event}` a `{}` in state `{{Self}}`", m.ident);
    let label = format!("`{event}` is not an event of `{{Self}}`");
    let note = format!("`{event}` is legal only in {legal}");
    let target_message = format!("`{event}` cannot lead from `{{S}}` to `{{Self}}`");
    let target_label = format!("`{{Self}}` is not a target of `{event}` from `{{S}}`");
    quote! {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        pub trait #tr {
            type State;
        }
        #[diagnostic::on_unimplemented(message = #target_message, label = #target_label, note = #note)]
        pub trait #target_tr<S> {}
    }
}

fn event_method(m: &Machine, event: &Ident, edges: &[&Edge]) -> TokenStream {
    let (tr, target_tr) = trait_idents(event);
    let doc = format!(
        "Event `{event}`: legal only in {}.\n\n\
         `f` builds the target state's data from this state's data; the result is the typed \
         target. A branching event returns whichever of its targets `f` builds.",
        legal_in(m, edges)
    );
    quote! {
        #[doc = #doc]
        #[inline]
        pub fn #event<T, F: ::core::ops::FnOnce(S) -> T>(self, f: F) -> Machine<T>
        where
            S: __event::#tr,
            T: __event::#target_tr<<S as __event::#tr>::State>,
        {
            Machine { state: f(self.state) }
        }
    }
}

/// `PaidNext`: for a state with more than one target, one of its targets. Any of them
/// converts into it with `.into()`, so a branch chosen at run time has one type.
fn next_enum(m: &Machine, g: &Graph, from: usize) -> Option<TokenStream> {
    let edges: Vec<(usize, &Edge)> = g.edges.iter().enumerate().filter(|(_, e)| e.from == from).collect();
    if edges.len() < 2 {
        return None;
    }
    let krate = &m.krate;
    let vis = &m.inner_vis;
    let enum_ident = m.ident;
    let state = m.states[from].ident;
    let next = super::next_ident(state);
    let targets: Vec<&Ident> = edges.iter().map(|(_, e)| m.states[e.to].ident).collect();
    let indices = edges.iter().map(|(i, _)| *i);
    let debug = m
        .derives
        .iter()
        .any(|d| d.is_ident("Debug"))
        .then(|| quote!(#[derive(Debug)]));
    let doc = format!(
        "The states `{state}` can move to: {}. Each converts into this enum with `.into()`.",
        targets.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
    );
    Some(quote! {
        #[doc = #doc]
        #debug
        #vis enum #next {
            #( #[allow(missing_docs)] #targets(Machine<#targets>), )*
        }

        impl #next {
            /// The transition that leads here, from the machine's definition.
            pub fn transition(&self) -> &'static #krate::Transition {
                let i = match self {
                    #( #next::#targets(_) => #indices, )*
                };
                &<super::#enum_ident as #krate::Fsm>::DEFINITION.transitions[i]
            }
        }

        #(
            #[automatically_derived]
            impl ::core::convert::From<Machine<#targets>> for #next {
                #[inline]
                fn from(m: Machine<#targets>) -> Self {
                    #next::#targets(m)
                }
            }
        )*

        #[automatically_derived]
        impl ::core::convert::From<#next> for super::#enum_ident {
            #[inline]
            fn from(n: #next) -> Self {
                match n {
                    #( #next::#targets(m) => m.into(), )*
                }
            }
        }
    })
}
