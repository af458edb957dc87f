//! The intermediate form of a machine. Each node keeps the syn node it came from, so that any
//! later error can point at the user's tokens.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, Path, Visibility};

use crate::attr::{self, Catch, On, Retry, Terminal};
use crate::ctxt::Ctxt;

pub(crate) struct Machine<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
    /// The enum's visibility, as seen from inside the generated module.
    pub(crate) inner_vis: TokenStream,
    /// The enum's visibility, as seen from the generated module's `typestate`.
    pub(crate) typed_vis: TokenStream,
    pub(crate) docs: Vec<&'a Attribute>,
    /// The generated module's name.
    pub(crate) module: Ident,
    /// The path to `fsm_core`.
    pub(crate) krate: TokenStream,
    pub(crate) derives: Vec<Path>,
    pub(crate) states: Vec<State<'a>>,
    /// State name to index, for resolving targets.
    index: HashMap<String, usize>,
    /// The visibility of the choice enums, three modules below the enum's.
    pub(crate) choice_vis: TokenStream,
    /// Whether a state has a branching event, so that the module has a `choice` module.
    pub(crate) has_choices: bool,
}

pub(crate) struct State<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) docs: Vec<&'a Attribute>,
    pub(crate) fields: &'a Fields,
    pub(crate) initial: Option<Ident>,
    pub(crate) terminal: Option<Terminal>,
    pub(crate) on: Vec<On>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout_ms: Option<(Ident, u64)>,
    pub(crate) wait: Option<crate::attr::Wait>,
    pub(crate) catch: Vec<Catch>,
    /// `parallel(...)` or `map(...)`.
    pub(crate) fan_out: Option<crate::attr::FanOut>,
    /// Some of this state's `#[fsm]` keys could not be read: rules that depend on them are
    /// skipped, so that one typo is reported once.
    pub(crate) tainted: bool,
}

impl State<'_> {
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }
}

impl<'a> Machine<'a> {
    /// Builds the model, or records why the input cannot be a machine at all (a struct, a
    /// union, a generic enum). Errors inside attributes are recorded and the model is still
    /// built from what could be read, so that the checks can report their errors too.
    pub(crate) fn from_input(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let variants = match &input.data {
            Data::Enum(data) => &data.variants,
            Data::Struct(data) => {
                cx.error_at(
                    data.struct_token.span,
                    "`#[derive(Fsm)]` is for enums: each variant is a state; turn this struct into an enum",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_at(
                    data.union_token.span,
                    "`#[derive(Fsm)]` is for enums: each variant is a state; turn this union into an enum",
                );
                return None;
            }
        };
        if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
            cx.error(
                &input.generics,
                "a machine cannot be generic: its typed states are concrete structs; use concrete types in the variants' fields",
            );
            return None;
        }
        let attrs = attr::machine_attrs(cx, &input.attrs);
        let module = attrs
            .module
            .unwrap_or_else(|| crate::names::module_ident(&input.ident));
        let krate = match attrs.krate {
            Some(path) => quote!(#path),
            None => quote!(::fsm_core),
        };
        let states = variants
            .iter()
            .map(|v| {
                let before = cx.count();
                let a = attr::state_attrs(cx, &v.attrs);
                let tainted = cx.count() > before;
                for field in &v.fields {
                    attr::reject(cx, &field.attrs, "a field");
                }
                if let Some((_, discriminant)) = &v.discriminant {
                    cx.error(
                        discriminant,
                        "a state cannot have an explicit discriminant; remove `= ...`",
                    );
                }
                State {
                    ident: &v.ident,
                    docs: docs(&v.attrs),
                    fields: &v.fields,
                    initial: a.initial,
                    terminal: a.terminal,
                    on: a.on,
                    retry: a.retry,
                    timeout_ms: a.timeout_ms,
                    wait: a.wait,
                    catch: a.catch,
                    fan_out: a.fan_out,
                    tainted,
                }
            })
            .collect::<Vec<_>>();
        let index = states
            .iter()
            .enumerate()
            .map(|(i, s)| (crate::names::unraw(s.ident), i))
            .collect();
        let has_choices = states
            .iter()
            .any(|s| s.on.iter().any(|on| on.targets.len() > 1));
        Some(Machine {
            ident: &input.ident,
            vis: &input.vis,
            inner_vis: inner_vis(&input.vis, 1),
            typed_vis: inner_vis(&input.vis, 2),
            choice_vis: inner_vis(&input.vis, 3),
            docs: docs(&input.attrs),
            module,
            krate,
            derives: attrs.derives,
            states,
            index,
            has_choices,
        })
    }

    /// The state called `name`, compared as Rust compares names (`r#B` is `B`).
    pub(crate) fn index_of(&self, name: &Ident) -> Option<usize> {
        self.index.get(&crate::names::unraw(name)).copied()
    }

    /// The state called `name`, as source text (possibly raw).
    pub(crate) fn index_of_str(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.index.get(name).copied()
    }
}

fn docs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc")).collect()
}

/// The visibility that, written on an item `depth` modules below the enum's, makes it as
/// visible as the enum: a private enum's items are `pub(super)` one level down and
/// `pub(in super::super)` two levels down; `pub(super)` becomes `pub(in super::super)` one
/// level down.
fn inner_vis(vis: &Visibility, depth: usize) -> TokenStream {
    let up = |extra: usize| {
        let supers = (0..depth + extra).map(|_| quote!(super));
        quote!(#(#supers)::*)
    };
    match vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited if depth == 1 => quote!(pub(super)),
        Visibility::Inherited => {
            let up = up(0);
            quote!(pub(in #up))
        }
        Visibility::Restricted(r) => {
            let path = &r.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") if path.leading_colon.is_none() => quote!(pub(in #path)),
                Some("self") if path.segments.len() == 1 && depth == 1 => quote!(pub(super)),
                Some("self") => {
                    let (up, rest) = (up(0), path.segments.iter().skip(1));
                    quote!(pub(in #up #(::#rest)*))
                }
                _ => {
                    let up = up(0);
                    quote!(pub(in #up::#path))
                }
            }
        }
    }
}
