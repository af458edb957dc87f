include!("../checkout.rs");

fn main() {
    let reserved = Machine::new(Submitted { order: 7 }).reserve(|s| Reserved { order: s.order });
    // The choice enum of `charge` from `Reserved` has `Paid` and `Declined`, not `Shipped`.
    let _ = reserved.charge(|_| choice::charge::Reserved::Shipped(Shipped { tracking: "1Z".into() }));
}
