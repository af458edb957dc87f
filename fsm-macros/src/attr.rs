//! Parses `#[fsm(...)]`. Each key is parsed in one place; an unknown, repeated or malformed key
//! is an error spanned on that key, and parsing goes on with the next key so that one build
//! reports every mistake.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Ident, Path, Token};

use crate::ctxt::Ctxt;

/// One `key`, `key = value` or `key(...)` inside `#[fsm(...)]`.
struct Meta {
    key: Ident,
    value: Value,
}

enum Value {
    Flag,
    Eq(TokenStream),
    List(TokenStream),
}

/// Keys on the enum itself.
#[derive(Default)]
pub(crate) struct MachineAttrs {
    /// `module = name`: the generated module, instead of the enum's name in snake case.
    pub(crate) module: Option<Ident>,
    /// `crate = path`: where `fsm_core` is, for users who renamed the dependency.
    pub(crate) krate: Option<Path>,
    /// `derive(Trait, ...)`: derives for the generated state structs.
    pub(crate) derives: Vec<Path>,
}

/// Keys on a variant.
#[derive(Default)]
pub(crate) struct StateAttrs {
    /// `initial`: the key, for spans.
    pub(crate) initial: Option<Ident>,
    /// `terminal` or `terminal(failure)`.
    pub(crate) terminal: Option<Terminal>,
    /// Each `on(event => A | B)`, in order.
    pub(crate) on: Vec<On>,
}

pub(crate) struct Terminal {
    pub(crate) key: Ident,
    pub(crate) failure: bool,
}

/// `on(event => A | B)`.
pub(crate) struct On {
    pub(crate) event: Ident,
    pub(crate) targets: Vec<Ident>,
}

pub(crate) fn machine_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> MachineAttrs {
    let mut out = MachineAttrs::default();
    for meta in metas(cx, attrs) {
        let key = meta.key.to_string();
        match (key.as_str(), meta.value) {
            // module = name
            ("module", Value::Eq(tokens)) => {
                set_once(cx, &meta.key, &mut out.module, syn::parse2::<Ident>(tokens))
            }
            // crate = path
            ("crate", Value::Eq(tokens)) => {
                set_once(cx, &meta.key, &mut out.krate, syn::parse2::<Path>(tokens))
            }
            // derive(Debug, Clone, ...)
            ("derive", Value::List(tokens)) => {
                let parser = syn::punctuated::Punctuated::<Path, Token![,]>::parse_terminated;
                match parser.parse2(tokens) {
                    Ok(paths) => out.derives.extend(paths),
                    Err(e) => cx.push(e),
                }
            }
            ("module" | "crate", _) => {
                cx.error(&meta.key, format!("expected `{key} = ...`"))
            }
            ("derive", _) => cx.error(&meta.key, "expected `derive(Trait, ...)`"),
            ("initial" | "terminal" | "on", _) => cx.error(
                &meta.key,
                format!("`{key}` belongs on a variant, not on the enum"),
            ),
            _ => cx.error(
                &meta.key,
                format!(
                    "unknown key `{key}` on the enum; expected `module = name`, `crate = path` or `derive(...)`"
                ),
            ),
        }
    }
    out
}

pub(crate) fn state_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> StateAttrs {
    let mut out = StateAttrs::default();
    for meta in metas(cx, attrs) {
        let key = meta.key.to_string();
        match (key.as_str(), meta.value) {
            // initial
            ("initial", Value::Flag) => {
                if out.initial.is_some() {
                    cx.error(&meta.key, "duplicate key `initial`");
                }
                out.initial = Some(meta.key);
            }
            // terminal | terminal(failure)
            ("terminal", value) => {
                let failure = match value {
                    Value::Flag => Some(false),
                    Value::List(tokens) => match syn::parse2::<Ident>(tokens.clone()) {
                        Ok(kind) if kind == "failure" => Some(true),
                        _ => {
                            cx.error(tokens, "expected `terminal` or `terminal(failure)`");
                            None
                        }
                    },
                    Value::Eq(_) => {
                        cx.error(&meta.key, "expected `terminal` or `terminal(failure)`");
                        None
                    }
                };
                if out.terminal.is_some() {
                    cx.error(&meta.key, "duplicate key `terminal`");
                } else if let Some(failure) = failure {
                    out.terminal = Some(Terminal {
                        key: meta.key,
                        failure,
                    });
                }
            }
            // on(event => Target) | on(event => A | B | C)
            ("on", Value::List(tokens)) => match parse_on.parse2(tokens) {
                Ok(on) => out.on.push(on),
                Err(e) => cx.push(e),
            },
            ("initial", _) => cx.error(&meta.key, "`initial` takes no value"),
            ("on", _) => cx.error(&meta.key, "expected `on(event => Target)`"),
            ("module" | "crate" | "derive", _) => cx.error(
                &meta.key,
                format!("`{key}` belongs on the enum, not on a variant"),
            ),
            _ => {
                let hint = crate::names::closest(&key, ["initial", "terminal", "on"])
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_else(|| {
                        "; expected `initial`, `terminal`, `terminal(failure)` or `on(event => Target)`"
                            .to_owned()
                    });
                cx.error(&meta.key, format!("unknown key `{key}`{hint}"))
            }
        }
    }
    out
}

/// Every `#[fsm]` attribute that is not where it belongs (on a field, say) is an error.
pub(crate) fn reject(cx: &mut Ctxt, attrs: &[Attribute], place: &str) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("fsm")) {
        cx.error(attr, format!("`#[fsm]` is not allowed on {place}"));
    }
}

fn set_once<T>(cx: &mut Ctxt, key: &Ident, slot: &mut Option<T>, value: syn::Result<T>) {
    match value {
        Err(e) => cx.push(e),
        Ok(_) if slot.is_some() => cx.error(key, format!("duplicate key `{key}`")),
        Ok(v) => *slot = Some(v),
    }
}

fn parse_on(input: ParseStream) -> syn::Result<On> {
    let event = input.parse::<Ident>()?;
    if input.is_empty() {
        let message = format!("`{event}` needs its targets, as in `on({event} => Target)`");
        return Err(syn::Error::new(event.span(), message));
    }
    if !input.peek(Token![=>]) {
        let message = format!(
            "expected `=>` between the event and its targets, as in `on({event} => Target)`"
        );
        return Err(input.error(message));
    }
    input.parse::<Token![=>]>()?;
    let mut targets = vec![input.parse::<Ident>()?];
    while input.parse::<Option<Token![|]>>()?.is_some() {
        targets.push(input.parse::<Ident>()?);
    }
    if !input.is_empty() {
        return Err(input.error("expected `|` and another target, or the end of `on(...)`"));
    }
    Ok(On { event, targets })
}

/// Splits every `#[fsm(...)]` into its keys. A malformed list records an error and yields the
/// keys read before it.
fn metas(cx: &mut Ctxt, attrs: &[Attribute]) -> Vec<Meta> {
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("fsm")) {
        let list = match attr.meta.require_list() {
            Ok(list) => list,
            Err(_) => {
                cx.error(attr, "expected `#[fsm(...)]`");
                continue;
            }
        };
        let parser = |input: ParseStream| {
            while !input.is_empty() {
                out.push(parse_meta(input)?);
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(e) = parser.parse2(list.tokens.clone()) {
            cx.push(e);
        }
    }
    out
}

fn parse_meta(input: ParseStream) -> syn::Result<Meta> {
    // `Ident::parse_any` also accepts keywords, for `crate = path`.
    let key = Ident::parse_any(input)?;
    let value = if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Value::Eq(tokens_until_comma(input, key.span())?)
    } else if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        Value::List(content.parse()?)
    } else {
        Value::Flag
    };
    Ok(Meta { key, value })
}

fn tokens_until_comma(input: ParseStream, key: Span) -> syn::Result<TokenStream> {
    let tokens = input.step(|cursor| {
        let mut rest = *cursor;
        let mut out = TokenStream::new();
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            out.extend(std::iter::once(tt));
            rest = next;
        }
        Ok((out, rest))
    })?;
    if tokens.is_empty() {
        return Err(syn::Error::new(key, "expected a value after `=`"));
    }
    Ok(tokens)
}
