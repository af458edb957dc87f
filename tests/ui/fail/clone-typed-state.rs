include!("../checkout.rs");

fn main() {
    let paid = Machine::new(Submitted { order: 7 })
        .reserve(|s| Reserved { order: s.order })
        .charge(|s| Paid { order: s.order });
    // A typed state cannot be duplicated: that would ship one payment twice.
    let _copy = paid.clone();
}
