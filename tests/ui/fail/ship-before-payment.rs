include!("../checkout.rs");

fn main() {
    let order = Machine::new(Submitted { order: 7 });
    let reserved = order.reserve(|s| Reserved { order: s.order });
    // Shipping needs a payment first.
    let _shipped = reserved.ship(|_| Shipped { tracking: "1Z".into() });
}
