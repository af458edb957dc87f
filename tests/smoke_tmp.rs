use fsm_core::Fsm;

pub type OrderId = u32;

#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
/// A checkout.
pub enum Checkout {
    /// submitted
    #[fsm(initial, on(reserve => Reserved | OutOfStock))]
    Submitted { order: OrderId, gift: bool },
    #[fsm(on(charge => Paid | PaymentDeclined))]
    Reserved { order: OrderId, gift: bool },
    #[fsm(on(wrap => Wrapped), on(ship => Shipped))]
    Paid { order: OrderId, gift: bool },
    #[fsm(on(ship => Shipped))]
    Wrapped(OrderId),
    #[fsm(on(release => Cancelled))]
    PaymentDeclined { order: OrderId, reason: String },
    #[fsm(terminal)]
    Shipped { tracking: String },
    #[fsm(terminal(failure))]
    OutOfStock,
    #[fsm(terminal(failure))]
    Cancelled { reason: String },
}

#[test]
fn smoke() {
    use checkout::*;
    let m = Machine::new(Submitted { order: 1, gift: true });
    let m: Machine<Reserved> = m.reserve(|s| Reserved { order: s.order, gift: s.gift });
    let next: ReservedNext = if m.order == 1 { m.charge(|r| Paid { order: r.order, gift: r.gift }).into() } else { m.charge(|r| PaymentDeclined { order: r.order, reason: "x".into() }).into() };
    println!("{:?} {:?}", next, next.transition());
    let e: Checkout = next.into();
    let p = Machine::<Paid>::try_from(e.clone()).unwrap();
    let err = Machine::<Shipped>::try_from(e).unwrap_err();
    assert_eq!(err.to_string(), "expected state `Shipped`, found `Paid`");
    let w = p.wrap(|p| Wrapped(p.order));
    let s = w.ship(|_| Shipped { tracking: "t".into() });
    assert_eq!(std::mem::size_of_val(&s), std::mem::size_of::<Shipped>());
    match AnyState::from(Checkout::from(s)) { AnyState::Shipped(s) => assert_eq!(s.tracking, "t"), _ => panic!() }
    print!("{}", Checkout::DEFINITION);
}
