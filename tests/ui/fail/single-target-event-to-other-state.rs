use fsm_core::Fsm;

#[derive(Fsm)]
pub enum Checkout {
    #[fsm(initial, on(reserve => Reserved | OutOfStock))]
    Submitted { order: u32 },
    #[fsm(on(charge => Paid | Declined))]
    Reserved { order: u32 },
    #[fsm(on(wrap => Wrapped), on(ship => Shipped))]
    Paid { order: u32 },
    #[fsm(on(ship => Shipped))]
    Wrapped { order: u32 },
    #[fsm(on(release => Cancelled))]
    Declined { order: u32 },
    #[fsm(terminal)]
    Shipped { tracking: String },
    #[fsm(terminal(failure))]
    OutOfStock,
    #[fsm(terminal(failure))]
    Cancelled,
}

use checkout::*;

fn main() {
    let order = Machine::new(Submitted { order: 7 }).reserve(|s| Reserved { order: s.order });
    let paid = order.charge(|s| Paid { order: s.order });
    // `wrap` leads to `Wrapped` only.
    let _ = paid.wrap(|_| Shipped { tracking: "1Z".into() });
}
