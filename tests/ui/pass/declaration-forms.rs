//! Every declaration form: unit, tuple and named-field states, single and branching events,
//! several events on one state, success and failure terminals, doc comments and visibility.
use fsm_core::{Fsm, StateKind};

/// A parcel on its way.
#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Parcel {
    /// Waiting at the depot.
    #[fsm(initial, on(load => Loaded | Lost))]
    AtDepot { depot: String, weight_grams: u32 },
    #[fsm(on(deliver => Delivered), on(return_to_sender => Returned))]
    Loaded(String, u32),
    #[fsm(terminal)]
    Delivered,
    #[fsm(terminal(failure))]
    Returned(String),
    #[fsm(terminal(failure))]
    Lost,
}

fn main() {
    let depot = parcel::Machine::new(parcel::AtDepot { depot: "north".into(), weight_grams: 500 });
    let loaded = depot.load(|d| parcel::Loaded(d.depot, d.weight_grams));
    assert_eq!(loaded.1, 500);
    let next: parcel::LoadedNext = if loaded.1 > 1000 {
        loaded.return_to_sender(|l| parcel::Returned(l.0)).into()
    } else {
        loaded.deliver(|_| parcel::Delivered).into()
    };
    assert_eq!(next.transition().event, "deliver");
    assert_eq!(Parcel::from(next), Parcel::Delivered);
    assert_eq!(Parcel::DEFINITION.states[4].kind, StateKind::Failure);
}
