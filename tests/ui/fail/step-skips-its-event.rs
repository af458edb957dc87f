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

impl Steps for Shop {
    async fn reserved(&self, order: Machine<Reserved>, _: Context) -> Result<ReservedNext, StepError> {
        Ok(order.charge(|r| Paid { order: r.order }).into())
    }
    async fn paid(&self, _: Machine<Paid>, _: Context) -> Result<Machine<Shipped>, StepError> {
        // A typed `Shipped` only comes from the `ship` event.
        Ok(Machine::new(Shipped))
    }
    fn catch_reserved_to_declined(&self, _: Reserved, _: &StepError) -> Declined {
        Declined
    }
}

fn main() {}
