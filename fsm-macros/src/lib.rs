//! The `#[derive(Fsm)]` macro of `fsm-core`. Depend on `fsm-core`, which re-exports it and
//! documents it; this crate is an implementation detail.
//!
//! The derive is a pipeline: `attr` parses `#[fsm(...)]`, `ast` builds the model, `check`
//! applies the declaration and graph rules, `expand` generates code from a checked model, and
//! `fallback` is what is emitted when a check fails.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod fallback;
mod names;
#[cfg(test)]
mod robustness;

use proc_macro::TokenStream;

#[proc_macro_derive(Fsm, attributes(fsm))]
pub fn derive_fsm(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input, &lex).into()
}

/// Lexes generated source text with the compiler's own lexer. (`proc_macro2`'s `FromStr`
/// first re-lexes the text itself, in this crate's unoptimised build, which costs more than
/// the whole derive.)
fn lex(src: &str) -> Option<proc_macro2::TokenStream> {
    src.parse::<TokenStream>().ok().map(Into::into)
}
