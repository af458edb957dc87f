//! The state structs, the typed state `Machine<S>`, and the conversions to and from the enum.

use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{Fields, Ident, Type};

use crate::ast::{Machine, State};
use crate::check::Graph;

pub(super) fn expand(m: &Machine, g: &Graph) -> TokenStream {
    let structs = m.states.iter().map(|s| state_struct(m, s));
    let typed = typed_state(m, &m.states[g.initial]);
    let any = any_state(m);
    quote! { #(#structs)* #typed #any }
}

/// One struct per state holding that state's data, shaped like the variant.
fn state_struct(m: &Machine, s: &State) -> TokenStream {
    let krate = &m.krate;
    let ident = s.ident;
    let docs = &s.docs;
    let derives = &m.derives;
    let derive = (!derives.is_empty()).then(|| quote!(#[derive(#(#derives),*)]));
    let vis = &m.inner_vis;
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
    let enum_ident = m.ident;
    let name = ident.to_string();
    let pat = pattern(s.fields);
    // Spanned on the variant, so that diagnostics about a state point at its declaration.
    let def = quote_spanned!(ident.span()=> #vis struct #ident #body);
    quote! {
        #(#docs)*
        #derive
        #def

        #[automatically_derived]
        impl #krate::__private::StateData for #ident {
            type Machine = super::#enum_ident;
            const NAME: &'static str = #name;
            #[inline]
            fn into_machine(self) -> super::#enum_ident {
                let #ident #pat = self;
                super::#enum_ident::#ident #pat
            }
            #[inline]
            fn from_machine(m: super::#enum_ident) -> ::core::result::Result<Self, super::#enum_ident> {
                // A machine of one state would make the second arm unreachable.
                #[allow(unreachable_patterns)]
                match m {
                    super::#enum_ident::#ident #pat => ::core::result::Result::Ok(#ident #pat),
                    other => ::core::result::Result::Err(other),
                }
            }
        }
    }
}

/// The destructuring pattern shared by a variant and its state struct: `{ a, b }`, `(__0, __1)`
/// or nothing.
pub(super) fn pattern(fields: &Fields) -> TokenStream {
    match fields {
        Fields::Named(f) => {
            let names = f.named.iter().map(|f| &f.ident);
            quote!({ #(#names),* })
        }
        Fields::Unnamed(f) => {
            let names = (0..f.unnamed.len()).map(|i| format_ident!("__{}", i));
            quote!(( #(#names),* ))
        }
        Fields::Unit => TokenStream::new(),
    }
}

/// `Machine<S>`: the machine, known to be in state `S`. Its field is private to the module,
/// so it is obtained only through `new`, an event, or `TryFrom` the enum.
fn typed_state(m: &Machine, initial: &State) -> TokenStream {
    let krate = &m.krate;
    let vis = &m.inner_vis;
    let enum_ident = m.ident;
    let initial_ident = initial.ident;
    let doc = format!(
        "A [`{0}`](super::{0}) known to be in state `S`.\n\n\
         Obtained only by [`Machine::new`] (the initial state `{1}`), by an event of another \
         typed state, or by `TryFrom<{0}>` (the way back from storage). It is the size of `S`, \
         and it dereferences to `S` to read the state's data.",
        enum_ident, initial_ident
    );
    let new_doc = format!("Starts a machine in its initial state, `{initial_ident}`.");
    quote! {
        #[doc = #doc]
        #vis struct Machine<S> {
            state: S,
        }

        impl Machine<#initial_ident> {
            #[doc = #new_doc]
            #[inline]
            pub fn new(state: #initial_ident) -> Self {
                Machine { state }
            }
        }

        impl<S> Machine<S> {
            /// The state's data.
            #[inline]
            pub fn data(&self) -> &S {
                &self.state
            }

            /// Gives up the typed state and keeps its data.
            #[inline]
            pub fn into_data(self) -> S {
                self.state
            }
        }

        impl<S> ::core::ops::Deref for Machine<S> {
            type Target = S;
            #[inline]
            fn deref(&self) -> &S {
                &self.state
            }
        }

        impl<S: ::core::fmt::Debug> ::core::fmt::Debug for Machine<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.state, f)
            }
        }

        #[automatically_derived]
        impl<S: #krate::__private::StateData<Machine = super::#enum_ident>>
            ::core::convert::From<Machine<S>> for super::#enum_ident
        {
            #[inline]
            fn from(m: Machine<S>) -> Self {
                m.state.into_machine()
            }
        }

        #[automatically_derived]
        impl<S: #krate::__private::StateData<Machine = super::#enum_ident>>
            ::core::convert::TryFrom<super::#enum_ident> for Machine<S>
        {
            type Error = #krate::WrongState<super::#enum_ident>;
            #[inline]
            fn try_from(m: super::#enum_ident) -> ::core::result::Result<Self, Self::Error> {
                match S::from_machine(m) {
                    ::core::result::Result::Ok(state) => ::core::result::Result::Ok(Machine { state }),
                    ::core::result::Result::Err(m) => ::core::result::Result::Err(#krate::WrongState::new(S::NAME, m)),
                }
            }
        }
    }
}

/// `AnyState`: one of the typed states, for a value whose state is known only at run time.
fn any_state(m: &Machine) -> TokenStream {
    let enum_ident = m.ident;
    let vis = &m.inner_vis;
    let idents: Vec<&Ident> = m.states.iter().map(|s| s.ident).collect();
    let pats: Vec<TokenStream> = m.states.iter().map(|s| pattern(s.fields)).collect();
    let debug = m
        .derives
        .iter()
        .any(|d| d.is_ident("Debug"))
        .then(|| quote!(#[derive(Debug)]));
    let doc = format!(
        "A [`{0}`](super::{0}) as one of its typed states, to match on: how a loader resumes \
         work on a stored value. `AnyState::from(value)` never fails.",
        enum_ident
    );
    quote! {
        #[doc = #doc]
        #debug
        #vis enum AnyState {
            #( #[allow(missing_docs)] #idents(Machine<#idents>), )*
        }

        #[automatically_derived]
        impl ::core::convert::From<super::#enum_ident> for AnyState {
            fn from(m: super::#enum_ident) -> Self {
                match m {
                    #( super::#enum_ident::#idents #pats => AnyState::#idents(Machine { state: #idents #pats }), )*
                }
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<AnyState> for super::#enum_ident {
            fn from(m: AnyState) -> Self {
                match m {
                    #( AnyState::#idents(m) => m.into(), )*
                }
            }
        }
    }
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

fn alias_ident(m: &Machine, s: &State, i: usize) -> Ident {
    format_ident!("__{}_{}_{}", m.ident, s.ident, i)
}

fn needs_alias(m: &Machine, tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(id) => {
            let name = id.to_string();
            name == "Self"
                || m.index_of_str(&name).is_some()
                || crate::check::RESERVED_STATE_NAMES.contains(&name.as_str())
                || name.strip_suffix("Next").is_some_and(|b| m.index_of_str(b).is_some())
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
                let mut group = proc_macro2::Group::new(g.delimiter(), replace_self(g.stream(), enum_ident));
                group.set_span(g.span());
                TokenTree::Group(group)
            }
            other => other,
        })
        .collect()
}
