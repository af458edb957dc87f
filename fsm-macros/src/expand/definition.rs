//! The machine's graph as static data: `impl Fsm for Enum`.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Machine;
use crate::check::Graph;

pub(super) fn expand(m: &Machine, g: &Graph) -> TokenStream {
    let krate = &m.krate;
    let enum_ident = m.ident;
    let name = enum_ident.to_string();
    let states = m.states.iter().map(|s| {
        let name = s.ident.to_string();
        let kind = match &s.terminal {
            None => quote!(Step),
            Some(t) if t.failure => quote!(Failure),
            Some(_) => quote!(Success),
        };
        quote!(#krate::StateInfo { name: #name, kind: #krate::StateKind::#kind })
    });
    let transitions = g.edges.iter().map(|e| {
        let (from, to) = (e.from, e.to);
        let event = e.event.to_string();
        quote!(#krate::Transition { from: #from, event: #event, to: #to })
    });
    let initial = g.initial;
    let arms = m.states.iter().enumerate().map(|(i, s)| {
        let ident = s.ident;
        quote!(super::#enum_ident::#ident { .. } => #i)
    });
    quote! {
        #[automatically_derived]
        impl #krate::Fsm for super::#enum_ident {
            const DEFINITION: &'static #krate::Definition = &#krate::Definition {
                name: #name,
                states: &[#(#states),*],
                initial: #initial,
                transitions: &[#(#transitions),*],
            };

            #[inline]
            fn state_index(&self) -> usize {
                match self {
                    #(#arms,)*
                }
            }
        }
    }
}
