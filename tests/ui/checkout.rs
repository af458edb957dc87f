// The checkout machine the typestate fixtures misuse.

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
