include!("../checkout.rs");

fn main() {
    let order = Machine::new(Submitted { order: 7 });
    let _reserved = order.reserve(|s| Reserved { order: s.order });
    // `order` was consumed by `reserve`: it cannot be reserved twice.
    let _again = order.reserve(|_| OutOfStock);
}
