//! The derive never panics: every mutation of a valid declaration (each token removed, each
//! identifier swapped, every prefix) yields either code or `compile_error!`.

use proc_macro2::{TokenStream, TokenTree};

const DECLARATION: &str = "
    #[fsm(derive(Debug), module = orders)]
    pub enum Checkout {
        #[fsm(initial, on(reserve => Reserved | OutOfStock))]
        Submitted { order: u32, items: Vec<String> },
        #[fsm(on(charge => Paid | Declined))]
        Reserved(u32, u64),
        #[fsm(on(wrap => Wrapped), on(ship => Shipped))]
        Paid { order: u32 },
        #[fsm(on(ship => Shipped))]
        Wrapped,
        #[fsm(on(release => Cancelled))]
        Declined { reason: String },
        #[fsm(terminal)]
        Shipped { tracking: String },
        #[fsm(terminal(failure))]
        OutOfStock,
        #[fsm(terminal(failure))]
        Cancelled,
    }";

fn flatten(tokens: TokenStream, out: &mut Vec<TokenTree>) {
    for tt in tokens {
        out.push(tt.clone());
        if let TokenTree::Group(g) = tt {
            flatten(g.stream(), out);
        }
    }
}

/// Rebuilds `tokens` with the token numbered `target` (in `flatten` order, counted in
/// `seen`) replaced by `with`, or removed.
fn mutate(
    tokens: TokenStream,
    target: usize,
    seen: &mut usize,
    with: &Option<TokenTree>,
) -> TokenStream {
    let mut out = TokenStream::new();
    for tt in tokens {
        let here = *seen;
        *seen += 1;
        if here == target {
            out.extend(with.clone());
            continue;
        }
        match tt {
            TokenTree::Group(g) => {
                let inner = mutate(g.stream(), target, seen, with);
                out.extend([TokenTree::Group(proc_macro2::Group::new(
                    g.delimiter(),
                    inner,
                ))]);
            }
            tt => out.extend([tt]),
        }
    }
    out
}

fn derive(tokens: TokenStream) -> String {
    match syn::parse2::<syn::DeriveInput>(tokens) {
        Ok(input) => crate::expand::derive(&input, &|s| s.parse().ok()).to_string(),
        Err(e) => e.to_compile_error().to_string(),
    }
}

#[test]
fn the_valid_declaration_expands_without_errors() {
    let out = derive(DECLARATION.parse().unwrap());
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("mod orders"));
}

#[test]
fn no_mutation_of_a_declaration_panics() {
    let original: TokenStream = DECLARATION.parse().unwrap();
    let mut all = Vec::new();
    flatten(original.clone(), &mut all);
    let swaps: Vec<Option<TokenTree>> = vec![
        None,
        Some(syn::parse_str::<TokenTree>("Shipped").unwrap()),
        Some(syn::parse_str::<TokenTree>("initial").unwrap()),
        Some(syn::parse_str::<TokenTree>(",").unwrap()),
        Some(syn::parse_str::<TokenTree>("=").unwrap()),
        Some(syn::parse_str::<TokenTree>("\"s\"").unwrap()),
        Some(syn::parse_str::<TokenTree>("()").unwrap()),
        Some(syn::parse_str::<TokenTree>("r#try").unwrap()),
        Some(syn::parse_str::<TokenTree>("Self").unwrap()),
        Some(syn::parse_str::<TokenTree>("self_").unwrap()),
        Some(syn::parse_str::<TokenTree>("Match").unwrap()),
        Some(syn::parse_str::<TokenTree>("_1").unwrap()),
    ];
    let (mut rejected, mut accepted) = (0, 0);
    let mut record = |out: String| {
        assert!(!out.is_empty(), "a mutation expanded to nothing");
        assert!(
            !out.contains("internal error"),
            "generated code did not lex: {out}"
        );
        if out.contains("compile_error") {
            rejected += 1;
        } else {
            accepted += 1;
        }
    };
    for position in 0..all.len() {
        for with in &swaps {
            let mutated = mutate(original.clone(), position, &mut 0, with);
            record(derive(mutated));
        }
    }
    let tokens: Vec<TokenTree> = original.into_iter().collect();
    for len in 0..tokens.len() {
        record(derive(tokens[..len].iter().cloned().collect()));
    }
    // Most mutations break the declaration; some (a swapped doc string, a removed derive
    // list) leave a valid machine.
    assert!(
        rejected > 500 && accepted > 0,
        "{rejected} rejected, {accepted} accepted"
    );
}
