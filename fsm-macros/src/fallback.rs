//! What is emitted when the declaration has errors: the errors, plus enough of the generated
//! items that the user's other code does not drown in follow-on errors (unknown `Machine`,
//! missing `Fsm` impl). Event methods are emitted without their legality bounds, so that calls
//! to them type-check while the declaration is being fixed.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Machine;
use crate::check::{is_module_name, is_reserved_event};
use crate::ctxt::Ctxt;

pub(crate) fn errors(cx: Ctxt) -> TokenStream {
    match cx.into_result() {
        Err(e) => e.to_compile_error(),
        Ok(()) => TokenStream::new(),
    }
}

pub(crate) fn stubs(m: &Machine, errors: syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    let krate = &m.krate;
    let enum_ident = m.ident;
    // Names the module defines for itself are left out: a state or an event that takes one is
    // among the errors already.
    let structs = m
        .states
        .iter()
        .map(|s| s.ident)
        .filter(|ident| !is_module_name(m, &ident.to_string()));
    let mut events: Vec<&syn::Ident> = Vec::new();
    for on in m.states.iter().flat_map(|s| &s.on) {
        if !is_reserved_event(&on.event.to_string()) && !events.iter().any(|e| **e == on.event) {
            events.push(&on.event);
        }
    }
    let module = &m.module;
    let vis = m.vis;
    // With one initial state `new` keeps its type, so that code using it infers its states.
    let initials: Vec<_> = m
        .states
        .iter()
        .filter(|s| s.initial.is_some())
        .map(|s| s.ident)
        .collect();
    let new = match initials.as_slice() {
        [initial] if !is_module_name(m, &initial.to_string()) => quote! {
            impl Machine<#initial> { pub fn new(_: #initial) -> Self { ::core::unreachable!() } }
        },
        _ => quote! {
            impl<S> Machine<S> { pub fn new(_: S) -> Self { ::core::unreachable!() } }
        },
    };
    quote! {
        #errors
        #vis mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(pub struct #structs;)*
            pub struct Machine<S>(S);
            #new
            impl<S> Machine<S> {
                #( pub fn #events<T, F: ::core::ops::FnOnce(S) -> T>(self, _: F) -> Machine<T> { ::core::unreachable!() } )*
            }
            impl #krate::Fsm for super::#enum_ident {
                const DEFINITION: &'static #krate::Definition = &#krate::Definition {
                    name: "", states: &[], initial: 0, transitions: &[],
                };
                fn state_index(&self) -> usize { ::core::unreachable!() }
            }
        }
    }
}
