//! Code generation. It only ever sees a checked model, and cannot fail.
//!
//! Everything is generated inside one module named after the machine (`Checkout` ->
//! `checkout`). The state structs live there, and so do the tokens the user wrote for them
//! (field types, which may hold macro calls), and every type that takes a derive of
//! `#[fsm(derive(...))]` (the state structs, `AnyState`, the `Next` and choice enums): a derive
//! is the user's code whatever its name, since a `#[macro_use]` crate's `Debug` takes
//! precedence over std's. The typed state `Machine<S>` and every impl that builds one live one
//! level down, in a private module `typestate` whose items the machine's module re-exports:
//! `Machine`'s field is private to `typestate`, no user-written token is ever expanded there,
//! and the code generated there calls macros by absolute path (`::core::matches!`), so the only
//! ways to obtain a typed state are the ones generated here. (Named for what rustc prints in
//! diagnostics, `typestate::Machine<checkout::Paid>`; a user type path through a `typestate`
//! of the user's own reaches the structs through an alias, like every module name.)
//!
//! Most of the output is written as Rust source text and lexed once. Building the same output
//! token by token with `quote!` costs a call across the proc-macro bridge per token, which at
//! 200 states made the derive itself take about 28 ms of a 50 ms expansion, on every build.
//! Only the pieces that carry the user's spans (the state structs with their field types,
//! and the impls that diagnostics point at) are built as tokens.

mod definition;
mod events;
mod states;
#[cfg(feature = "steps")]
mod steps;

use std::fmt::Write as _;

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::ast::Machine;
use crate::check::{self, Graph};
use crate::ctxt::Ctxt;
use crate::fallback;

/// `lex` turns generated source text into tokens.
pub(crate) fn derive(
    input: &DeriveInput,
    lex: &dyn Fn(&str) -> Option<TokenStream>,
) -> TokenStream {
    let mut cx = Ctxt::default();
    let Some(machine) = Machine::from_input(&mut cx, input) else {
        return fallback::errors(cx);
    };
    let graph = check::check(&mut cx, &machine);
    match (cx.into_result(), graph) {
        (Ok(()), Some(graph)) => expand(&machine, &graph, lex),
        (Err(errors), _) => fallback::stubs(&machine, errors),
        // `check` returns no graph only after recording why.
        (Ok(()), None) => fallback::stubs(
            &machine,
            syn::Error::new_spanned(machine.ident, "this machine could not be checked"),
        ),
    }
}

/// Generated source text, with the names every generator needs.
pub(super) struct Src<'m> {
    pub(super) out: String,
    /// Types defined in the machine's module rather than in `typestate`: those that take the
    /// derives the user names (`AnyState`, the `Next` and choice enums). A user's derive is
    /// user code, and never runs where `Machine`'s field is visible; their impls that build
    /// typed states stay in `out`.
    pub(super) outer: String,
    pub(super) m: &'m Machine<'m>,
    /// Path to fsm-core, e.g. `::fsm_core`.
    pub(super) krate: String,
    /// Visibility of the items of `typestate`, e.g. `pub(in super::super)`.
    pub(super) vis: String,
    /// Visibility of the items of the machine's module, e.g. `pub(super)`.
    pub(super) outer_vis: String,
    /// The states' names as written, read from the compiler once (each read of an
    /// identifier's text is a call across the proc-macro bridge).
    names: Vec<String>,
}

impl Src<'_> {
    pub(super) fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    pub(super) fn write(&mut self, args: std::fmt::Arguments) {
        // Writing to a `String` cannot fail.
        let _ = self.out.write_fmt(args);
    }

    pub(super) fn outer_write(&mut self, args: std::fmt::Arguments) {
        let _ = self.outer.write_fmt(args);
    }

    /// The name of state `i`, as written.
    pub(super) fn state(&self, i: usize) -> String {
        self.names[i].clone()
    }

    /// The machine of branch `j` of state `i`, as `typestate` reaches it.
    pub(super) fn branch_type(&self, i: usize, j: usize) -> String {
        let s = &self.m.states[i];
        let Some((_, path)) = s.fan_out.as_ref().and_then(|f| f.branches.get(j)) else {
            return "()".to_owned();
        };
        if states::branch_needs_alias(self.m, path) {
            format!("super::super::{}", states::branch_alias(self.m, s, j))
        } else {
            quote!(#path).to_string()
        }
    }
}

/// A string as a Rust string literal.
pub(super) fn lit(s: &str) -> String {
    format!("{s:?}")
}

fn expand(m: &Machine, g: &Graph, lex: &dyn Fn(&str) -> Option<TokenStream>) -> TokenStream {
    let mut src = Src {
        out: String::with_capacity(512 * m.states.len()),
        outer: String::new(),
        m,
        krate: m.krate.to_string(),
        vis: m.typed_vis.to_string(),
        outer_vis: m.inner_vis.to_string(),
        names: m.states.iter().map(|s| s.ident.to_string()).collect(),
    };
    let structs_tokens = states::structs(m);
    states::write(&mut src, g);
    let spanned = events::write(&mut src, g);
    definition::write(&mut src, g);
    let fan_checks = definition::fan_out_checks(&src);
    #[cfg(feature = "steps")]
    steps::write(&mut src, g);
    let (Some(body), Some(outer)) = (lex(&src.out), lex(&src.outer)) else {
        // Our own output always lexes; if it ever did not, say so rather than panic.
        let message =
            "internal error in #[derive(Fsm)]: generated code did not lex; please report it";
        return syn::Error::new_spanned(m.ident, message).to_compile_error();
    };
    let errors = events::error_module(m);
    let structs = quote! { #structs_tokens #outer #errors };
    let exports = exports(m);
    module(m, structs, exports, quote! { #spanned #fan_checks #body })
}

/// The items of `typestate` that the machine's module re-exports.
fn exports(m: &Machine) -> TokenStream {
    let vis = &m.inner_vis;
    #[cfg(feature = "steps")]
    let steps = quote!(, Steps);
    #[cfg(not(feature = "steps"))]
    let steps = TokenStream::new();
    quote!(#vis use self::typestate::{Machine #steps};)
}

/// Wraps generated items in the machine's module: the state structs (with the user's
/// tokens) at its top, the typed state and everything that builds one in `typestate`.
fn module(
    m: &Machine,
    structs: TokenStream,
    exports: TokenStream,
    typed: TokenStream,
) -> TokenStream {
    let vis = m.vis;
    let module = &m.module;
    let docs = &m.docs;
    let enum_ident = m.ident;
    let krate = &m.krate;
    let intro = format!(
        "Typed states of [`{0}`](super::{0}), generated by `#[derive(Fsm)]`.\n\n\
         [`Machine<S>`](Machine) is a `{0}` that is known to be in state `S`; each state's data \
         is the struct of the same name.",
        m.ident
    );
    let docs_gap = (!docs.is_empty()).then(|| quote!(#[doc = ""]));
    let aliases = states::field_aliases(m);
    quote! {
        #aliases
        #(#docs)*
        #docs_gap
        #[doc = #intro]
        #vis mod #module {
            // The states' field types are written as in the enum's own module.
            #[allow(unused_imports)]
            use super::*;
            #structs
            #exports
            mod typestate {
                // A machine of one state makes the catch-all arm of a conversion unreachable.
                #![allow(unreachable_patterns)]
                // The state structs, and the user's names as the enum's module sees them.
                #[allow(unused_imports)]
                use super::*;
                use super::super::#enum_ident as __Enum;
                // Short names for what every state's items name: a path of one token instead
                // of five, which a large machine's every build lexes and resolves again.
                use ::core::result::Result as __Result;
                use ::core::ops::FnOnce as __FnOnce;
                use #krate::__private::StateData as __StateData;
                use #krate::WrongState as __Wrong;
                #typed
            }
        }
    }
}
