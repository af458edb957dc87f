//! The state structs, the typed state `Machine<S>`, and the conversions to and from the enum.

use std::fmt::Write as _;

use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{Fields, Ident, Type};

use super::{lit, Src};
use crate::ast::{Machine, State};
use crate::check::{is_module_name, Graph};
use crate::names::unraw;

pub(super) fn write(src: &mut Src, g: &Graph) {
    // Hidden impls, one per state, carry no `#[automatically_derived]`: nothing lints them, and
    // at hundreds of states every attribute is paid for on each build.
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        let pat = pattern(src.m.states[i].fields);
        src.write(format_args!(
            "impl __StateData<__Enum> for {s} {{\
               fn into_machine(self) -> __Enum {{ let {s}{pat} = self; __Enum::{s}{pat} }}\
               fn from_machine(m: __Enum) -> __Result<Self, __Wrong<__Enum>> {{\
                 match m {{ __Enum::{s}{pat} => __Result::Ok({s}{pat}), m => __Result::Err(__Wrong::new({name}, m)) }}\
               }}\
             }}",
            name = lit(&unraw(src.m.states[i].ident)),
        ));
    }
    typed_state(src, g);
    any_state(src);
}

/// The destructuring pattern shared by a variant and its state struct: `{ a: __0, b: __1 }`,
/// `(__0, __1)` or nothing. Fields are bound to names no user can take for a field by
/// accident of the generated code's locals: a field named `__driver` binds `__0`.
pub(super) fn pattern(fields: &Fields) -> String {
    let mut out = String::new();
    match fields {
        Fields::Named(f) => {
            out.push('{');
            for (i, f) in f.named.iter().enumerate() {
                if let Some(name) = &f.ident {
                    let _ = write!(out, "{name}: __{i},");
                }
            }
            out.push('}');
        }
        Fields::Unnamed(f) => {
            out.push('(');
            for i in 0..f.unnamed.len() {
                let _ = write!(out, "__{i},");
            }
            out.push(')');
        }
        Fields::Unit => {}
    }
    out
}

/// One struct per state holding that state's data, shaped like the variant. Built as tokens:
/// the field types keep the user's spans.
pub(super) fn structs(m: &Machine) -> TokenStream {
    let vis = &m.inner_vis;
    let derives = &m.derives;
    let derive = (!derives.is_empty()).then(|| quote!(#[derive(#(#derives),*)]));
    let mut out = TokenStream::new();
    for s in &m.states {
        let ident = s.ident;
        let docs = &s.docs;
        let fields = s.fields.iter().enumerate().map(|(i, f)| {
            let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));
            let name = f.ident.as_ref().map(|n| quote!(#n:));
            let ty = field_type(m, s, i, &f.ty);
            quote!(#(#docs)* #vis #name #ty)
        });
        let body = match s.fields {
            Fields::Named(_) => quote!({ #(#fields,)* }),
            Fields::Unnamed(_) => quote!(( #(#fields,)* );),
            Fields::Unit => quote!(;),
        };
        // Spanned on the variant, so that diagnostics about a state point at its declaration.
        let def = quote_spanned!(ident.span()=> #vis struct #ident #body);
        out.extend(quote!(#(#docs)* #derive #def));
    }
    out
}

/// `Machine<S>`: the machine, known to be in state `S`. Its field is private to the module,
/// so it is obtained only through `new`, an event, or `TryFrom` the enum.
fn typed_state(src: &mut Src, g: &Graph) {
    let vis = src.vis.clone();
    let e = src.m.ident.to_string();
    let init = src.state(g.initial);
    let doc = lit(&format!(
        "A [`{e}`](super::{e}) known to be in state `S`.\n\n\
         Obtained only by [`Machine::new`] (the initial state `{init}`), by an event of another \
         typed state, or by `TryFrom<{e}>` (the way back from storage). It is the size of `S`, \
         and it dereferences to `S` to read the state's data."
    ));
    let new_doc = lit(&format!("Starts a machine in its initial state, `{init}`."));
    src.write(format_args!(
        "#[doc = {doc}] {vis} struct Machine<S> {{ state: S }}\
         impl<S> Machine<S> {{\
           #[doc = {new_doc}] #[inline] pub fn new(state: S) -> Self where S: __initial::InitialState {{ Machine {{ state }} }}\
           /// The state's data.\n\
           #[inline] pub fn data(&self) -> &S {{ &self.state }}\
           /// Gives up the typed state and keeps its data.\n\
           #[inline] pub fn into_data(self) -> S {{ self.state }}\
         }}\
         impl<S> ::core::ops::Deref for Machine<S> {{\
           type Target = S;\
           #[inline] fn deref(&self) -> &S {{ &self.state }}\
         }}\
         impl<S: ::core::fmt::Debug> ::core::fmt::Debug for Machine<S> {{\
           fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{\
             ::core::fmt::Debug::fmt(&self.state, f)\
           }}\
         }}\
         #[automatically_derived]\
         impl<S: __StateData<__Enum>> ::core::convert::From<Machine<S>> for __Enum {{\
           #[inline] fn from(m: Machine<S>) -> Self {{ m.state.into_machine() }}\
         }}\
         #[automatically_derived]\
         impl<S: __StateData<__Enum>> ::core::convert::TryFrom<__Enum> for Machine<S> {{\
           type Error = __Wrong<__Enum>;\
           #[inline] fn try_from(m: __Enum) -> __Result<Self, Self::Error> {{\
             match S::from_machine(m) {{\
               __Result::Ok(state) => __Result::Ok(Machine {{ state }}),\
               __Result::Err(e) => __Result::Err(e),\
             }}\
           }}\
         }}"
    ));
}

/// `AnyState`: one of the typed states, for a value whose state is known only at run time.
fn any_state(src: &mut Src) {
    let vis = src.outer_vis.clone();
    let e = src.m.ident.to_string();
    let doc = lit(&format!(
        "A [`{e}`](super::{e}) as one of its typed states, to match on: how a loader resumes \
         work on a stored value. `AnyState::from(value)` never fails."
    ));
    let debug = super::events::debug_derive(src.m);
    // The variants are the states, documented on their structs.
    src.outer_write(format_args!(
        "#[doc = {doc}] {debug} #[allow(missing_docs)] {vis} enum AnyState {{"
    ));
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        src.outer_write(format_args!("{s}(Machine<{s}>),"));
    }
    src.outer.push('}');
    src.push("#[automatically_derived] impl ::core::convert::From<__Enum> for AnyState { fn from(m: __Enum) -> Self { match m {");
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        let pat = pattern(src.m.states[i].fields);
        src.write(format_args!(
            "__Enum::{s}{pat} => AnyState::{s}(Machine {{ state: {s}{pat} }}),"
        ));
    }
    src.push("} } } #[automatically_derived] impl ::core::convert::From<AnyState> for __Enum { fn from(m: AnyState) -> Self { match m {");
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        src.write(format_args!(
            "AnyState::{s}(m) => __StateData::into_machine(m.state),"
        ));
    }
    src.push("} } }");
}

/// Inside the module, a field type that names one of the module's own items (a state called
/// `Payment` holding a `Payment`) or `Self` would mean something else; such a type is reached
/// through an alias declared next to the enum, where it means what the user wrote.
fn field_type(m: &Machine, s: &State, i: usize, ty: &Type) -> TokenStream {
    if needs_alias(m, ty.to_token_stream()) {
        let alias = alias_ident(m, s, i);
        quote!(super::#alias)
    } else {
        ty.to_token_stream()
    }
}

pub(super) fn field_aliases(m: &Machine) -> TokenStream {
    let enum_ident = m.ident;
    let mut out = TokenStream::new();
    for s in &m.states {
        for (j, (_, path)) in s.fan_out.iter().flat_map(|f| f.branches.iter()).enumerate() {
            if branch_needs_alias(m, path) {
                let alias = branch_alias(m, s, j);
                out.extend(quote! {
                    #[doc(hidden)]
                    #[allow(non_camel_case_types)]
                    type #alias = #path;
                });
            }
        }
    }
    for s in &m.states {
        for (i, f) in s.fields.iter().enumerate() {
            if needs_alias(m, f.ty.to_token_stream()) {
                let alias = alias_ident(m, s, i);
                let ty = replace_self(f.ty.to_token_stream(), enum_ident);
                out.extend(quote! {
                    #[doc(hidden)]
                    #[allow(non_camel_case_types)]
                    type #alias = #ty;
                });
            }
        }
    }
    out
}

/// Whether the machine of a state's branch is reached through an alias declared next to the
/// enum: a path that means something else inside the generated module (`self::`, `super::`,
/// a name of one of the module's items).
pub(super) fn branch_needs_alias(m: &Machine, path: &syn::Path) -> bool {
    let first = path.segments.first().map(|s| s.ident.to_string());
    matches!(first.as_deref(), Some("self" | "super" | "Self"))
        || needs_alias(m, path.to_token_stream())
}

pub(super) fn branch_alias(m: &Machine, s: &State, j: usize) -> Ident {
    format_ident!("__{}_{}_branch_{}", unraw(m.ident), unraw(s.ident), j)
}

fn alias_ident(m: &Machine, s: &State, i: usize) -> Ident {
    format_ident!("__{}_{}_{}", unraw(m.ident), unraw(s.ident), i)
}

fn needs_alias(m: &Machine, tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(id) => {
            let name = id.to_string();
            name == "Self" || m.index_of_str(&name).is_some() || is_module_name(m, &name)
        }
        TokenTree::Group(g) => needs_alias(m, g.stream()),
        _ => false,
    })
}

fn replace_self(tokens: TokenStream, enum_ident: &Ident) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Ident(id) if id == "Self" => TokenTree::Ident(enum_ident.clone()),
            TokenTree::Group(g) => {
                let mut group =
                    proc_macro2::Group::new(g.delimiter(), replace_self(g.stream(), enum_ident));
                group.set_span(g.span());
                TokenTree::Group(group)
            }
            other => other,
        })
        .collect()
}
