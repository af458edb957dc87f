include!("../checkout.rs");

fn main() {
    // Only the initial state has a constructor.
    let _paid = Machine::new(Paid { order: 7 });
}
