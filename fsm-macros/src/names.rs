//! Names derived from the user's: the generated module, event traits, suggestions for typos.

/// `OrderFlow` -> `order_flow`, `HTTPRequest` -> `http_request`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let acronym_end = i > 0
                && chars[i - 1].is_uppercase()
                && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev_lower || acronym_end {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The generated module's default name: the enum's in snake case, as a raw identifier when
/// that is a keyword (`enum Move` -> `mod r#move`), with a suffix for the few keywords that
/// cannot be raw (`enum Crate` -> `mod crate_`).
pub(crate) fn module_ident(enum_ident: &syn::Ident) -> syn::Ident {
    let name = snake_case(&unraw(enum_ident));
    let span = enum_ident.span();
    match name.as_str() {
        "crate" | "self" | "super" => syn::Ident::new(&format!("{name}_"), span),
        _ if syn::parse_str::<syn::Ident>(&name).is_err() => syn::Ident::new_raw(&name, span),
        _ => syn::Ident::new(&name, span),
    }
}

/// A name as the user reads it: `r#try` -> `try`. Names in messages, docs and the definition,
/// and names derived from others, start from this.
pub(crate) fn unraw(ident: &syn::Ident) -> String {
    syn::ext::IdentExt::unraw(ident).to_string()
}

/// Whether two identifiers name the same thing, as Rust compares them (`r#B` is `B`).
pub(crate) fn same(a: &syn::Ident, b: &syn::Ident) -> bool {
    unraw(a) == unraw(b)
}

/// A derived method name as source text, raw when it is a keyword (`Match` -> `r#match`).
#[cfg(feature = "steps")]
pub(crate) fn fn_name(name: &str) -> String {
    match name {
        "crate" | "self" | "super" => format!("{name}_"),
        _ if syn::parse_str::<syn::Ident>(name).is_err() => format!("r#{name}"),
        _ => name.to_owned(),
    }
}

/// `ship` -> `Ship`: the name of an event's trait. A name that would not be an identifier
/// (`Self` from `self_`, `1` from `_1`) gets a word added: `SelfEvent`, `Event1`.
pub(crate) fn event_trait(event: &syn::Ident) -> String {
    let camel = camel_case(&unraw(event));
    match camel.chars().next() {
        _ if camel == "Self" => "SelfEvent".to_owned(),
        Some(c) if c.is_alphabetic() => camel,
        _ => format!("Event{camel}"),
    }
}

/// The module of the machine's module that holds the choice enums of its branching events,
/// as `choice::<event>::<state>`.
pub(crate) const CHOICE: &str = "choice";

/// The module of the machine's module that holds a constant per error kind its `catch` routes
/// name: `errors::GATEWAY_UNAVAILABLE`.
pub(crate) const ERRORS: &str = "errors";

/// The constant of an error kind: `gateway_unavailable` -> `GATEWAY_UNAVAILABLE`.
pub(crate) fn error_const(kind: &str) -> String {
    kind.strip_prefix("r#").unwrap_or(kind).to_uppercase()
}

/// The error kinds `catch` routes name (not `_`), in the order first named, each once, with
/// where it was first named and the states that route it.
pub(crate) fn error_kinds<'a>(
    m: &'a crate::ast::Machine<'a>,
) -> Vec<(&'a str, proc_macro2::Span, Vec<&'a syn::Ident>)> {
    let mut out: Vec<(&str, proc_macro2::Span, Vec<&syn::Ident>)> = Vec::new();
    for s in &m.states {
        for (kind, span) in s.catch.iter().flat_map(|c| &c.kinds) {
            let kind = kind.strip_prefix("r#").unwrap_or(kind);
            if kind == "*" {
                continue;
            }
            match out.iter_mut().find(|(k, ..)| *k == kind) {
                Some((.., states)) if states.last() != Some(&s.ident) => states.push(s.ident),
                Some(_) => {}
                None => out.push((kind, *span, vec![s.ident])),
            }
        }
    }
    out
}

/// `ship_express` -> `ShipExpress`.
pub(crate) fn camel_case(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, with an adjacent swap counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}
