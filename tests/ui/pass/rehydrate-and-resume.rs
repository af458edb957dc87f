//! The way back from storage: a stored value becomes a typed state again, explicitly and
//! fallibly, or as one of the typed states to match on.
use fsm_core::Fsm;

#[derive(Fsm, Debug, Clone, PartialEq)]
enum Ticket {
    #[fsm(initial, on(assign => Assigned))]
    Open { title: String },
    #[fsm(on(close => Closed))]
    Assigned { title: String, to: String },
    #[fsm(terminal)]
    Closed,
}

fn main() {
    let stored: Ticket = ticket::Machine::new(ticket::Open { title: "printer".into() })
        .assign(|o| ticket::Assigned { title: o.title, to: "ada".into() })
        .into();
    let Err(err) = ticket::Machine::<ticket::Open>::try_from(stored.clone()) else {
        unreachable!("stored as assigned")
    };
    assert_eq!((err.expected(), err.found()), ("Open", "Assigned"));
    assert_eq!(err.into_inner(), stored);
    match ticket::AnyState::from(stored) {
        ticket::AnyState::Assigned(t) => {
            let _closed = t.close(|_| ticket::Closed);
        }
        _ => unreachable!("stored as assigned"),
    }
}
