include!("../checkout.rs");

fn main() {
    let shipped = Machine::new(Submitted { order: 7 })
        .reserve(|s| Reserved { order: s.order })
        .charge(|s| Paid { order: s.order })
        .ship(|_| Shipped { tracking: "1Z".into() });
    // A terminal state has no events.
    let _ = shipped.release(|_| Cancelled);
}
