//! What is emitted when the declaration has errors: the errors, plus enough of the generated
//! items that the user's other code does not drown in follow-on errors (unknown `Machine`,
//! missing `Fsm` impl). Event methods are emitted without their legality bounds, so that calls
//! to them type-check while the declaration is being fixed.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Machine;
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
    let structs = m.states.iter().map(|s| {
        let ident = s.ident;
        quote!(pub struct #ident;)
    });
    let mut events: Vec<String> = m.states.iter().flat_map(|s| &s.on).map(|on| on.event.to_string()).collect();
    events.sort();
    events.dedup();
    let events = events.iter().map(|e| syn::Ident::new(e, proc_macro2::Span::call_site()));
    let module = &m.module;
    let vis = m.vis;
    quote! {
        #errors
        #vis mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(#structs)*
            pub struct Machine<S>(S);
            impl<S> Machine<S> {
                pub fn new<T>(_: T) -> Self { ::core::unreachable!() }
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
