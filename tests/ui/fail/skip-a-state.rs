include!("../checkout.rs");

fn main() {
    let order = Machine::new(Submitted { order: 7 });
    // Charging before inventory is reserved skips `Reserved`.
    let _paid = order.charge(|s| Paid { order: s.order });
}
