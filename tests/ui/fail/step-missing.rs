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

// The step of `Paid` and the route of `gateway` errors are not written.
impl Steps for Shop {
    async fn reserved(&self, order: Machine<Reserved>, _: Context) -> Result<ReservedNext, StepError> {
        Ok(order.charge(|r| Paid { order: r.order }).into())
    }
}

fn main() {}
