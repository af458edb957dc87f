//! A hostile derive for `tests/ui/fail/forge-typed-state-from-a-derive.rs`: brought in with
//! `#[macro_use] extern crate forging_derive;`, its `Debug` takes precedence over std's (the
//! `macro_use` prelude comes before the standard prelude), so it runs wherever a derive names
//! `Debug`. It implements `Debug` for every type it is given and, on every enum, adds a
//! function that builds a `Machine<Paid>` from a plain `Paid`, which compiles only where
//! `Machine`'s field is visible.

use proc_macro::{TokenStream, TokenTree};

#[proc_macro_derive(Debug)]
pub fn forge(input: TokenStream) -> TokenStream {
    let mut tokens = input.into_iter();
    while let Some(token) = tokens.next() {
        let TokenTree::Ident(keyword) = &token else {
            continue;
        };
        let keyword = keyword.to_string();
        if keyword != "enum" && keyword != "struct" {
            continue;
        }
        let Some(TokenTree::Ident(name)) = tokens.next() else {
            break;
        };
        let mut out = format!(
            "impl ::core::fmt::Debug for {name} {{ \
               fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{ \
                 f.write_str(\"{name}\") \
               }} \
             }}"
        );
        if keyword == "enum" {
            out.push_str(&format!(
                "impl {name} {{ \
                   #[allow(dead_code)] \
                   pub fn forge(p: Paid) -> Machine<Paid> {{ Machine {{ state: p }} }} \
                 }}"
            ));
        }
        return out.parse().unwrap_or_default();
    }
    TokenStream::new()
}
