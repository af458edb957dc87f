include!("../checkout.rs");

fn main() {
    let order = Machine::new(Submitted { order: 7 });
    // `reserve` leads to `Reserved` or `OutOfStock`, never straight to `Shipped`.
    let _shipped = order.reserve(|_| Shipped { tracking: "1Z".into() });
}
