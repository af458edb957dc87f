//! The machine's graph as static data: `impl Fsm for Enum`.

use super::{lit, Src};
use crate::check::Graph;

pub(super) fn write(src: &mut Src, g: &Graph) {
    let k = src.krate.clone();
    let name = lit(&src.m.ident.to_string());
    src.write(format_args!(
        "#[automatically_derived] impl {k}::Fsm for __Enum {{\
           const DEFINITION: &'static {k}::Definition = &{k}::Definition {{ name: {name}, states: &["
    ));
    for (i, s) in src.m.states.iter().enumerate() {
        let kind = match &s.terminal {
            None => "Step",
            Some(t) if t.failure => "Failure",
            Some(_) => "Success",
        };
        let name = lit(&src.state(i));
        src.write(format_args!(
            "{k}::StateInfo {{ name: {name}, kind: {k}::StateKind::{kind} }},"
        ));
    }
    src.write(format_args!("], initial: {}, transitions: &[", g.initial));
    for e in &g.edges {
        let event = lit(&e.event.to_string());
        src.write(format_args!(
            "{k}::Transition {{ from: {}, event: {event}, to: {} }},",
            e.from, e.to
        ));
    }
    src.push("] }; #[inline] fn state_index(&self) -> usize { match self {");
    for i in 0..src.m.states.len() {
        let s = src.state(i);
        src.write(format_args!("__Enum::{s} {{ .. }} => {i},"));
    }
    src.push("} } }");
}
