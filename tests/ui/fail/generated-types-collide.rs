use fsm_core::Fsm;

// A branching event's choice enum is named after its state and event: `charge` from
// `Reserved` is `ReservedCharge`. An event `next` would make a `ReservedNext`, the name of the
// state's `Next` enum; `A` with `b_c` and `AB` with `c` would both make `ABC`.
#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(next => Paid | Declined))]
    Reserved,
    #[fsm(on(bc => Declined | AB))]
    Paid,
    #[fsm(on(c => A | Declined))]
    AB,
    #[fsm(on(b_c => Declined | Done))]
    A,
    #[fsm(terminal)]
    Done,
    #[fsm(terminal(failure))]
    Declined,
}

fn main() {}
