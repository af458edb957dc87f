// The machine and the step handlers' type the step fixtures implement `Steps` for.

use fsm_core::{Context, Fsm, StepError};

#[derive(Fsm, Clone)]
pub enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), catch(gateway => Declined))]
    Reserved { order: u32 },
    #[fsm(on(ship => Shipped))]
    Paid { order: u32 },
    #[fsm(terminal)]
    Shipped,
    #[fsm(terminal(failure))]
    Declined,
}

use checkout::*;

struct Shop;
