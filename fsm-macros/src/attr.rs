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
    /// The tokens inside the parentheses, and the parentheses' span.
    List(TokenStream, Span),
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
    /// `retry(...)`: how the state's step is retried.
    pub(crate) retry: Option<Retry>,
    /// `timeout_ms = N`: how long one attempt of the state's step may take.
    pub(crate) timeout_ms: Option<(Ident, u64)>,
    /// `wait` or `wait(timeout_ms = N)`: the state's step hands out a task token and the
    /// execution waits for its answer.
    pub(crate) wait: Option<Wait>,
    /// Each `catch(kind | kind => Target)`, in order.
    pub(crate) catch: Vec<Catch>,
    /// `parallel(name = Machine, ...)` or `map(Machine, ...)`.
    pub(crate) fan_out: Option<FanOut>,
}

/// `parallel(customer = Notify, support = Notify, compensate)` or `map(Parcel,
/// max_concurrency = 100, tolerated_failures = 2, tolerated_percent = 5, compensate)`: the
/// state's step starts branches, each a machine of its own, and its join leaves the state.
pub(crate) struct FanOut {
    /// The key, for spans.
    pub(crate) key: Ident,
    /// A Map's options; `None` for a Parallel state.
    pub(crate) map: Option<MapOptions>,
    /// Each branch's name and machine; a Map's one branch is named `item`.
    pub(crate) branches: Vec<(Ident, Path)>,
    /// Whether branches that had succeeded are compensated when the state fails.
    pub(crate) compensate: bool,
}

/// The options of `map(...)`, as Amazon States Language's Map state has them.
#[derive(Default)]
pub(crate) struct MapOptions {
    pub(crate) max_concurrency: u64,
    pub(crate) tolerated_failures: Option<u64>,
    pub(crate) tolerated_percent: Option<u64>,
}

impl MapOptions {
    /// Whether some items may fail: the join then receives the failed ones too.
    #[cfg_attr(not(feature = "steps"), allow(dead_code))]
    pub(crate) fn tolerates(&self) -> bool {
        self.tolerated_failures.is_some() || self.tolerated_percent.is_some()
    }
}

/// `wait` or `wait(timeout_ms = N)`.
pub(crate) struct Wait {
    /// The key, for spans.
    pub(crate) key: Ident,
    /// How long the wait lasts before it fails with a timeout.
    pub(crate) timeout_ms: Option<u64>,
}

/// `retry(max_attempts = 3, interval_ms = 1000, backoff_rate = 2.0, max_delay_ms = 5000,
/// jitter = full)`; every field is optional, with Amazon States Language's defaults.
pub(crate) struct Retry {
    pub(crate) key: Ident,
    pub(crate) max_attempts: u32,
    pub(crate) interval_ms: u64,
    pub(crate) backoff_rate: f64,
    pub(crate) max_delay_ms: Option<u64>,
    pub(crate) jitter_full: bool,
}

/// `catch(kind => Target)`: when the step fails for good with an error of kind `kind` (`_`:
/// any), the execution moves to `Target`.
pub(crate) struct Catch {
    pub(crate) key: Ident,
    /// The kinds matched, `"*"` for `_`, each with the token that named it.
    pub(crate) kinds: Vec<(String, Span)>,
    pub(crate) target: Ident,
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
            ("derive", Value::List(tokens, parens)) => {
                let parser = syn::punctuated::Punctuated::<Path, Token![,]>::parse_terminated;
                match parse_list(tokens, parens, parser) {
                    Ok(paths) => out.derives.extend(paths),
                    Err(e) => cx.push(e),
                }
            }
            ("module" | "crate", _) => {
                cx.error(&meta.key, format!("expected `{key} = ...`"))
            }
            ("derive", _) => cx.error(&meta.key, "expected `derive(Trait, ...)`"),
            (
                "initial" | "terminal" | "on" | "retry" | "timeout_ms" | "catch" | "wait"
                | "parallel" | "map",
                _,
            ) => cx.error(
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
                    Value::List(tokens, _) => match syn::parse2::<Ident>(tokens.clone()) {
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
            ("on", Value::List(tokens, parens)) => match parse_list(tokens, parens, parse_on) {
                Ok(on) => out.on.push(on),
                Err(e) => cx.push(e),
            },
            // retry | retry(max_attempts = 3, interval_ms = 1000, ...)
            ("retry", value) => {
                let (tokens, parens) = match value {
                    Value::Flag => (TokenStream::new(), meta.key.span()),
                    Value::List(tokens, parens) => (tokens, parens),
                    Value::Eq(_) => {
                        cx.error(
                            &meta.key,
                            "expected `retry(max_attempts = N, interval_ms = N, ...)`",
                        );
                        continue;
                    }
                };
                let key = meta.key.clone();
                match parse_list(tokens, parens, |input| parse_retry(input, key)) {
                    Ok(retry) if out.retry.is_some() => {
                        cx.error(&retry.key, "duplicate key `retry`")
                    }
                    Ok(retry) => out.retry = Some(retry),
                    Err(e) => cx.push(e),
                }
            }
            // timeout_ms = 500
            ("timeout_ms", Value::Eq(tokens)) => {
                let bounds = &TIMEOUT_MS;
                match (|input: ParseStream| bounds.parse(input)).parse2(tokens) {
                    Ok(_) if out.timeout_ms.is_some() => {
                        cx.error(&meta.key, "duplicate key `timeout_ms`")
                    }
                    Ok(ms) => out.timeout_ms = Some((meta.key, ms)),
                    Err(e) => cx.push(e),
                }
            }
            // wait | wait(timeout_ms = 86_400_000)
            ("wait", value) => {
                let timeout = match value {
                    Value::Flag => Ok(None),
                    Value::List(tokens, parens) => parse_list(tokens, parens, parse_wait),
                    Value::Eq(_) => Err(syn::Error::new(
                        meta.key.span(),
                        "expected `wait` or `wait(timeout_ms = N)`",
                    )),
                };
                match timeout {
                    Ok(_) if out.wait.is_some() => cx.error(&meta.key, "duplicate key `wait`"),
                    Ok(timeout_ms) => {
                        out.wait = Some(Wait {
                            key: meta.key,
                            timeout_ms,
                        })
                    }
                    Err(e) => cx.push(e),
                }
            }
            // catch(kind => Target) | catch(a | b => Target) | catch(_ => Target)
            ("catch", Value::List(tokens, parens)) => {
                let key = meta.key.clone();
                match parse_list(tokens, parens, |input| parse_catch(input, key)) {
                    Ok(catch) => out.catch.push(catch),
                    Err(e) => cx.push(e),
                }
            }
            // parallel(name = Machine, ...) | map(Machine, max_concurrency = N, ...)
            ("parallel" | "map", Value::List(tokens, parens)) => {
                let key = meta.key.clone();
                match parse_list(tokens, parens, |input| parse_fan_out(input, key)) {
                    Ok(fan) if out.fan_out.is_some() => cx.error(
                        &fan.key,
                        "a state fans out once: one `parallel(...)` or `map(...)`",
                    ),
                    Ok(fan) => out.fan_out = Some(fan),
                    Err(e) => cx.push(e),
                }
            }
            ("parallel", _) => cx.error(
                &meta.key,
                "expected `parallel(name = Machine, ...)`: each branch's name and the machine it runs",
            ),
            ("map", _) => cx.error(
                &meta.key,
                "expected `map(Machine, max_concurrency = N)`: the machine each item runs",
            ),
            ("timeout_ms", _) => cx.error(&meta.key, "expected `timeout_ms = N` (milliseconds)"),
            ("catch", _) => cx.error(&meta.key, "expected `catch(error_kind => Target)`"),
            ("initial", _) => cx.error(&meta.key, "`initial` takes no value"),
            ("on", _) => cx.error(&meta.key, "expected `on(event => Target)`"),
            ("module" | "crate" | "derive", _) => cx.error(
                &meta.key,
                format!("`{key}` belongs on the enum, not on a variant"),
            ),
            _ => {
                let keys = [
                    "initial",
                    "terminal",
                    "on",
                    "retry",
                    "timeout_ms",
                    "catch",
                    "wait",
                    "parallel",
                    "map",
                ];
                let hint = crate::names::closest(&key, keys)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_else(|| {
                        "; expected `initial`, `terminal`, `on(...)`, `retry(...)`, `timeout_ms = N`, `catch(...)`, `wait`, `parallel(...)` or `map(...)`"
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

/// Parses the tokens inside a key's parentheses with `parser`. Errors at the end of the list
/// ("expected ...") point at its closing parenthesis rather than at `#[derive(Fsm)]`.
fn parse_list<T>(
    tokens: TokenStream,
    parens: Span,
    parser: impl FnOnce(ParseStream) -> syn::Result<T>,
) -> syn::Result<T> {
    let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, tokens);
    group.set_span(parens);
    let inside = |input: ParseStream| {
        let content;
        syn::parenthesized!(content in input);
        parser(&content)
    };
    inside.parse2(TokenTree::Group(group).into())
}

/// A state's name where one is expected, after the token `after` (`=>` or `|`): a missing or
/// malformed name is an error that says so, spanned on what is there or on `after`.
fn state_name(input: ParseStream, after: (&str, Span), example: &str) -> syn::Result<Ident> {
    let (token, span) = after;
    if input.is_empty() {
        let message = format!("expected a state after `{token}`, as in `{example}`");
        return Err(syn::Error::new(span, message));
    }
    input.parse::<Ident>().map_err(|e| {
        let message =
            format!("expected a state (a variant of this enum) after `{token}`, as in `{example}`");
        syn::Error::new(e.span(), message)
    })
}

fn parse_on(input: ParseStream) -> syn::Result<On> {
    if input.is_empty() {
        return Err(input.error("expected an event and its targets, as in `on(ship => Shipped)`"));
    }
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
    let arrow = input.parse::<Token![=>]>()?;
    let example = format!("on({event} => Target)");
    let mut targets = vec![state_name(input, ("=>", arrow.spans[1]), &example)?];
    while let Some(bar) = input.parse::<Option<Token![|]>>()? {
        let example = format!("on({event} => A | B)");
        targets.push(state_name(input, ("|", bar.span), &example)?);
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
        let parens = syn::parenthesized!(content in input);
        Value::List(content.parse()?, parens.span.join())
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

/// A whole-number policy field and the range Amazon States Language allows for it.
struct Bounds {
    field: &'static str,
    min: u64,
    max: u64,
    /// What the number counts and where the limit comes from, for the message.
    meaning: &'static str,
}

/// ASL's `MaxAttempts`: 0 to 99,999,999 retries.
const MAX_ATTEMPTS: Bounds = Bounds {
    field: "max_attempts",
    min: 0,
    max: 99_999_999,
    meaning: "retries after the first attempt (ASL's `MaxAttempts` is at most 99999999)",
};
/// ASL's `IntervalSeconds`: 1 to 99,999,999 seconds.
const INTERVAL_MS: Bounds = Bounds {
    field: "interval_ms",
    min: 1,
    max: 99_999_999_000,
    meaning: "milliseconds (ASL's `IntervalSeconds` is at most 99999999)",
};
/// ASL's `MaxDelaySeconds`: 1 to 31,622,400 seconds (a year).
const MAX_DELAY_MS: Bounds = Bounds {
    field: "max_delay_ms",
    min: 1,
    max: 31_622_400_000,
    meaning: "milliseconds (ASL's `MaxDelaySeconds` is at most 31622400, a year)",
};
/// ASL's `TimeoutSeconds`: 1 to 99,999,999 seconds.
const TIMEOUT_MS: Bounds = Bounds {
    field: "timeout_ms",
    min: 1,
    max: 99_999_999_000,
    meaning: "milliseconds (ASL's `TimeoutSeconds` is at most 99999999)",
};

impl Bounds {
    fn error(&self, span: Span) -> syn::Error {
        let Bounds {
            field,
            min,
            max,
            meaning,
        } = self;
        syn::Error::new(
            span,
            format!("`{field}` must be a whole number from {min} to {max}: {meaning}"),
        )
    }

    /// The field's value: a literal, possibly negative (which is out of range).
    fn parse(&self, input: ParseStream) -> syn::Result<u64> {
        let span = input.span();
        if input.is_empty() {
            return Err(input.error(format!("expected a number after `{} =`", self.field)));
        }
        let negative = input.parse::<Option<Token![-]>>()?.is_some();
        let lit = match input.parse::<syn::Lit>() {
            Ok(syn::Lit::Int(lit)) => lit,
            Ok(other) => return Err(self.error(other.span())),
            Err(_) => return Err(self.error(span)),
        };
        match lit.base10_parse::<u64>() {
            Ok(n) if !negative && (self.min..=self.max).contains(&n) => Ok(n),
            _ => Err(self.error(lit.span())),
        }
    }
}

/// The inside of `wait(...)`: nothing, or `timeout_ms = N`.
fn parse_wait(input: ParseStream) -> syn::Result<Option<u64>> {
    if input.is_empty() {
        return Ok(None);
    }
    let field: Ident = input.parse()?;
    if field != "timeout_ms" {
        return Err(syn::Error::new(
            field.span(),
            format!("unknown field `{field}` in `wait(...)`; expected `timeout_ms = N`"),
        ));
    }
    input.parse::<Token![=]>()?;
    let ms = TIMEOUT_MS.parse(input)?;
    if !input.is_empty() {
        return Err(input.error("expected `)` after `wait(timeout_ms = N`"));
    }
    Ok(Some(ms))
}

fn parse_retry(input: ParseStream, key: Ident) -> syn::Result<Retry> {
    // Amazon States Language's defaults.
    let mut retry = Retry {
        key,
        max_attempts: 3,
        interval_ms: 1000,
        backoff_rate: 2.0,
        max_delay_ms: None,
        jitter_full: false,
    };
    let mut seen: Vec<String> = Vec::new();
    while !input.is_empty() {
        let field = input.parse::<Ident>()?;
        let name = field.to_string();
        if seen.contains(&name) {
            return Err(syn::Error::new(
                field.span(),
                format!("duplicate `{name}` in `retry(...)`"),
            ));
        }
        seen.push(name.clone());
        input.parse::<Token![=]>()?;
        match name.as_str() {
            "max_attempts" => {
                // The bounds fit in a `u32`.
                retry.max_attempts = MAX_ATTEMPTS.parse(input)? as u32;
            }
            "interval_ms" => retry.interval_ms = INTERVAL_MS.parse(input)?,
            "max_delay_ms" => retry.max_delay_ms = Some(MAX_DELAY_MS.parse(input)?),
            "backoff_rate" => {
                let negative = input.parse::<Option<Token![-]>>()?.is_some();
                let lit = input.parse::<syn::Lit>()?;
                let rate = match &lit {
                    syn::Lit::Float(f) => f.base10_parse::<f64>()?,
                    syn::Lit::Int(i) => i.base10_parse::<f64>()?,
                    _ => {
                        return Err(syn::Error::new(
                            lit.span(),
                            "expected a number, such as `2.0`",
                        ))
                    }
                };
                if negative || !(rate.is_finite() && rate >= 1.0) {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`backoff_rate` must be a number of at least 1.0: each delay is the one before times this (ASL's `BackoffRate`)",
                    ));
                }
                retry.backoff_rate = rate;
            }
            "jitter" => {
                let kind = input.parse::<Ident>()?;
                retry.jitter_full = match kind.to_string().as_str() {
                    "full" => true,
                    "none" => false,
                    _ => {
                        return Err(syn::Error::new(
                            kind.span(),
                            "expected `jitter = full` or `jitter = none`",
                        ))
                    }
                };
            }
            _ => {
                let fields = [
                    "max_attempts",
                    "interval_ms",
                    "backoff_rate",
                    "max_delay_ms",
                    "jitter",
                ];
                let hint = field_hint(&name, &fields);
                return Err(syn::Error::new(
                    field.span(),
                    format!("unknown retry field `{name}`{hint}"),
                ));
            }
        }
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    }
    Ok(retry)
}

/// What follows "unknown field `name`" in a key's list: the field meant, when `name` is a
/// typo of one, else every field the key takes.
fn field_hint(name: &str, fields: &[&str]) -> String {
    match crate::names::closest(name, fields.iter().copied()) {
        Some(f) => format!("; did you mean `{f}`?"),
        None => {
            let all: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            format!("; expected one of {}", all.join(", "))
        }
    }
}

fn parse_catch(input: ParseStream, key: Ident) -> syn::Result<Catch> {
    if input.is_empty() {
        return Err(
            input.error("expected an error kind and a state, as in `catch(timeout => State)`")
        );
    }
    let mut kinds = Vec::new();
    loop {
        if let Some(underscore) = input.parse::<Option<Token![_]>>()? {
            kinds.push(("*".to_owned(), underscore.span));
        } else {
            let kind = Ident::parse_any(input)?;
            kinds.push((kind.to_string(), kind.span()));
        }
        if input.parse::<Option<Token![|]>>()?.is_none() {
            break;
        }
    }
    if !input.peek(Token![=>]) {
        return Err(
            input.error("expected `=>` and the state to route to, as in `catch(kind => State)`")
        );
    }
    let arrow = input.parse::<Token![=>]>()?;
    let target = state_name(input, ("=>", arrow.spans[1]), "catch(kind => State)")?;
    if !input.is_empty() {
        return Err(input.error("expected the end of `catch(...)`: one target state"));
    }
    Ok(Catch { key, kinds, target })
}

/// ASL's `MaxConcurrency`: how many items run at once (0: no limit).
const MAX_CONCURRENCY: Bounds = Bounds {
    field: "max_concurrency",
    min: 0,
    max: 1_000_000,
    meaning: "items run at once, 0 for no limit",
};
/// ASL's `ToleratedFailureCount`.
const TOLERATED_FAILURES: Bounds = Bounds {
    field: "tolerated_failures",
    min: 0,
    max: u32::MAX as u64,
    meaning: "items that may fail without failing the state",
};
/// ASL's `ToleratedFailurePercentage`.
const TOLERATED_PERCENT: Bounds = Bounds {
    field: "tolerated_percent",
    min: 0,
    max: 100,
    meaning: "the percentage of items that may fail without failing the state",
};

/// The inside of `parallel(...)` (`name = Machine, ..., compensate`) or `map(...)`
/// (`Machine, max_concurrency = N, tolerated_failures = N, tolerated_percent = N,
/// compensate`).
fn parse_fan_out(input: ParseStream, key: Ident) -> syn::Result<FanOut> {
    let is_map = key == "map";
    let mut fan = FanOut {
        key,
        map: is_map.then(MapOptions::default),
        branches: Vec::new(),
        compensate: false,
    };
    if is_map {
        if input.is_empty() {
            return Err(input.error(
                "expected the machine each item runs, as in `map(Parcel, max_concurrency = 10)`",
            ));
        }
        let machine: Path = input.parse()?;
        fan.branches
            .push((Ident::new("item", fan.key.span()), machine));
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    } else if input.is_empty() {
        return Err(input.error(
            "expected the branches, each a name and the machine it runs, as in `parallel(customer = Notify, support = Notify)`",
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    while !input.is_empty() {
        let name = Ident::parse_any(input)?;
        let text = name.to_string();
        if text == "compensate" && !input.peek(Token![=]) {
            if fan.compensate {
                return Err(syn::Error::new(name.span(), "duplicate `compensate`"));
            }
            fan.compensate = true;
        } else if let Some(map) = fan.map.as_mut() {
            if seen.contains(&text) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("duplicate `{text}` in `map(...)`"),
                ));
            }
            seen.push(text.clone());
            input.parse::<Token![=]>()?;
            match text.as_str() {
                "max_concurrency" => map.max_concurrency = MAX_CONCURRENCY.parse(input)?,
                "tolerated_failures" => {
                    map.tolerated_failures = Some(TOLERATED_FAILURES.parse(input)?)
                }
                "tolerated_percent" => {
                    map.tolerated_percent = Some(TOLERATED_PERCENT.parse(input)?)
                }
                _ => {
                    let fields = [
                        "max_concurrency",
                        "tolerated_failures",
                        "tolerated_percent",
                        "compensate",
                    ];
                    let hint = field_hint(&text, &fields);
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown field `{text}` in `map(...)`{hint}"),
                    ));
                }
            }
        } else {
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("expected `{text} = Machine`: a branch's name and the machine it runs"),
                ));
            }
            input.parse::<Token![=]>()?;
            if fan
                .branches
                .iter()
                .any(|(n, _)| crate::names::same(n, &name))
            {
                return Err(syn::Error::new(
                    name.span(),
                    format!("two branches are called `{text}`; give each its own name"),
                ));
            }
            let machine: Path = input.parse()?;
            fan.branches.push((name, machine));
        }
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    }
    if fan.map.is_none() && fan.branches.is_empty() {
        return Err(syn::Error::new(
            fan.key.span(),
            "a parallel state needs at least one branch, as in `parallel(customer = Notify)`",
        ));
    }
    if fan.map.is_none() && fan.branches.len() > MAX_BRANCHES {
        return Err(syn::Error::new(
            fan.branches[MAX_BRANCHES].0.span(),
            format!(
                "a parallel state has at most {MAX_BRANCHES} branches; run more as a `map(...)` over items, or group branches into a machine of their own"
            ),
        ));
    }
    Ok(fan)
}

/// The most branches a Parallel state has (fsm-core joins tuples up to this size).
pub(crate) const MAX_BRANCHES: usize = 8;
