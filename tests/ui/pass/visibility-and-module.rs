//! The generated module takes the enum's visibility and can be renamed; the typed states are
//! usable from other modules.
mod shop {
    use fsm_core::Fsm;

    #[derive(Fsm)]
    #[fsm(module = refund_states)]
    pub(crate) enum Refund {
        #[fsm(initial, on(approve => Approved | Rejected))]
        Requested { amount_cents: u64 },
        #[fsm(terminal)]
        Approved { amount_cents: u64 },
        #[fsm(terminal(failure))]
        Rejected,
    }
}

use shop::refund_states::{Approved, Machine, Requested};

fn main() {
    let requested = Machine::new(Requested { amount_cents: 1200 });
    let approved: Machine<Approved> = requested.approve(|r| Approved { amount_cents: r.amount_cents });
    assert_eq!(approved.amount_cents, 1200);
    let _stored: shop::Refund = approved.into();
}
