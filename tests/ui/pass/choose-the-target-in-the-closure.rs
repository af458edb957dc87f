//! A branching event's closure can choose its target from the data it holds, by building the
//! event's choice enum (`charge` from `Reserved` -> `choice::charge::Reserved`), which has a variant for each
//! target of `charge` from `Reserved` and no other.
use fsm_core::Fsm;

#[derive(Fsm, Debug, PartialEq)]
#[fsm(derive(Debug, PartialEq))]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), on(cancel => Cancelled))]
    Reserved { order: u32, balance: u32 },
    #[fsm(terminal)]
    Paid { order: u32 },
    #[fsm(terminal(failure))]
    Declined { order: u32, reason: String },
    #[fsm(terminal(failure))]
    Cancelled,
}

use checkout::*;

fn charge(order: Machine<Reserved>) -> ReservedNext {
    order
        .charge(|r| {
            if r.balance >= 10 {
                choice::charge::Reserved::Paid(Paid { order: r.order })
            } else {
                choice::charge::Reserved::Declined(Declined { order: r.order, reason: "balance too low".into() })
            }
        })
        .into()
}

fn main() {
    let rich = charge(Machine::new(Reserved { order: 1, balance: 50 }));
    assert_eq!(Checkout::from(rich), Checkout::Paid { order: 1 });
    let poor = charge(Machine::new(Reserved { order: 2, balance: 5 }));
    assert_eq!(poor.transition().event, "charge");
    assert_eq!(Checkout::from(poor), Checkout::Declined { order: 2, reason: "balance too low".into() });
    // The typed state of the choice reads the data before it becomes the `Next` enum.
    let chosen = Machine::new(Reserved { order: 3, balance: 0 }).charge(|r| choice::charge::Reserved::Paid(Paid { order: r.order }));
    assert_eq!(*chosen.data(), choice::charge::Reserved::Paid(Paid { order: 3 }));
}
