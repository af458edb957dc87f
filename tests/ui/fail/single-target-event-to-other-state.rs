include!("../checkout.rs");

fn main() {
    let order = Machine::new(Submitted { order: 7 }).reserve(|s| Reserved { order: s.order });
    let paid = order.charge(|s| Paid { order: s.order });
    // `wrap` leads to `Wrapped` only.
    let _ = paid.wrap(|_| Shipped { tracking: "1Z".into() });
}
