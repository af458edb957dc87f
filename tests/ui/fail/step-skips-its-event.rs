include!("../shop.rs");

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
