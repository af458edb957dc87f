include!("../shop.rs");

// The step of `Paid` and the route of `gateway` errors are not written.
impl Steps for Shop {
    async fn reserved(&self, order: Machine<Reserved>, _: Context) -> Result<ReservedNext, StepError> {
        Ok(order.charge(|r| Paid { order: r.order }).into())
    }
}

fn main() {}
