include!("../shop.rs");

impl Steps for Shop {
    async fn reserved(&self, order: Machine<Reserved>, _: Context) -> Result<ReservedNext, StepError> {
        // A reserved order cannot be shipped: `Shipped` is not one of its next states.
        Ok(order.charge(|_| Shipped).into())
    }
    async fn paid(&self, order: Machine<Paid>, _: Context) -> Result<Machine<Shipped>, StepError> {
        Ok(order.ship(|_| Shipped))
    }
    fn catch_reserved_to_declined(&self, _: Reserved, _: &StepError) -> Declined {
        Declined
    }
}

fn main() {}
