//! The flagship: an order's checkout across inventory, payment, gift wrapping and shipping,
//! driven through the typed states `#[derive(Fsm)]` generates.
//!
//! Each step is a function that receives a typed state and can only return the states its
//! events lead to: shipping an unpaid order would not compile. One order is stored half-way
//! through (as the enum, the storable form) and resumed from storage.
//!
//! Run with `cargo run --example checkout`.

use std::collections::HashMap;

use fsm_core::Fsm;

pub type OrderId = u32;
pub type Sku = &'static str;

/// One order's checkout.
#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Checkout {
    /// The customer placed the order.
    #[fsm(initial, on(reserve => Reserved | OutOfStock))]
    Submitted {
        order: OrderId,
        items: Vec<Sku>,
        gift: bool,
    },
    /// Inventory is held for the order.
    #[fsm(on(charge => Paid | PaymentDeclined))]
    Reserved {
        order: OrderId,
        reservation: u64,
        gift: bool,
    },
    /// The customer paid.
    #[fsm(on(wrap => Wrapped), on(ship => Shipped))]
    Paid {
        order: OrderId,
        payment: String,
        gift: bool,
    },
    /// Gift-wrapped, ready to ship.
    #[fsm(on(ship => Shipped))]
    Wrapped { order: OrderId },
    /// The payment was refused; the reservation must be released.
    #[fsm(on(release => Cancelled))]
    PaymentDeclined {
        order: OrderId,
        reservation: u64,
        reason: String,
    },
    /// On its way to the customer.
    #[fsm(terminal)]
    Shipped { tracking: String },
    /// Nothing to sell.
    #[fsm(terminal(failure))]
    OutOfStock,
    /// Cancelled after a declined payment.
    #[fsm(terminal(failure))]
    Cancelled { reason: String },
}

use checkout::*;

/// The services the checkout orchestrates, simulated in memory.
struct Services {
    stock: HashMap<Sku, u32>,
    next_reservation: u64,
    declined_cards: Vec<OrderId>,
    outbox: Vec<String>,
}

impl Services {
    fn reserve(&mut self, items: &[Sku]) -> Option<u64> {
        if items
            .iter()
            .any(|sku| self.stock.get(sku).copied().unwrap_or(0) == 0)
        {
            return None;
        }
        for sku in items {
            *self.stock.entry(sku).or_default() -= 1;
        }
        self.next_reservation += 1;
        Some(self.next_reservation)
    }

    fn charge(&mut self, order: OrderId) -> Result<String, String> {
        if self.declined_cards.contains(&order) {
            Err("card declined by issuer".to_owned())
        } else {
            Ok(format!("pay_{order:04}"))
        }
    }

    fn notify(&mut self, to: &str, message: String) {
        self.outbox.push(format!("to {to}: {message}"));
    }
}

// The steps: each takes a typed state and returns what its events allow.

fn reserve(order: Machine<Submitted>, services: &mut Services) -> SubmittedNext {
    match services.reserve(&order.items) {
        Some(reservation) => order
            .reserve(|s| Reserved {
                order: s.order,
                reservation,
                gift: s.gift,
            })
            .into(),
        None => order.reserve(|_| OutOfStock).into(),
    }
}

fn charge(order: Machine<Reserved>, services: &mut Services) -> ReservedNext {
    match services.charge(order.order) {
        Ok(payment) => order
            .charge(|r| Paid {
                order: r.order,
                payment,
                gift: r.gift,
            })
            .into(),
        Err(reason) => order
            .charge(|r| PaymentDeclined {
                order: r.order,
                reservation: r.reservation,
                reason,
            })
            .into(),
    }
}

fn fulfil(order: Machine<Paid>) -> Machine<Shipped> {
    let tracking = format!("1Z{:06}", order.order);
    if order.gift {
        order
            .wrap(|p| Wrapped { order: p.order })
            .ship(|_| Shipped { tracking })
    } else {
        order.ship(|_| Shipped { tracking })
    }
}

fn release(order: Machine<PaymentDeclined>, services: &mut Services) -> Machine<Cancelled> {
    services.notify(
        "customer",
        format!("order {} cancelled: {}", order.order, order.reason),
    );
    services.notify(
        "support",
        format!("order {} payment declined ({})", order.order, order.reason),
    );
    order.release(|d| Cancelled { reason: d.reason })
}

/// Drives one stored order from whatever state it is in to a terminal state.
fn resume(stored: Checkout, services: &mut Services) -> Checkout {
    let mut current = stored;
    loop {
        let before = current.state_name();
        current = match AnyState::from(current) {
            AnyState::Submitted(o) => reserve(o, services).into(),
            AnyState::Reserved(o) => charge(o, services).into(),
            AnyState::Paid(o) => fulfil(o).into(),
            AnyState::Wrapped(o) => o
                .ship(|w| Shipped {
                    tracking: format!("1Z{:06}", w.order),
                })
                .into(),
            AnyState::PaymentDeclined(o) => release(o, services).into(),
            terminal => return terminal.into(),
        };
        println!("    {before} -> {}", current.state_name());
    }
}

fn main() {
    let mut services = Services {
        stock: HashMap::from([("mug", 5), ("tea", 3), ("kettle", 0)]),
        next_reservation: 100,
        declined_cards: vec![3],
        outbox: Vec::new(),
    };
    println!("{}", Checkout::DEFINITION);

    // Order 1, straight through the typed API: every line is a legal transition.
    println!("order 1 (typed, step by step):");
    let order = Machine::new(Submitted {
        order: 1,
        items: vec!["mug"],
        gift: false,
    });
    let SubmittedNext::Reserved(order) = reserve(order, &mut services) else {
        panic!("mugs are in stock");
    };
    println!("    Submitted -> {}", Checkout::from(order).state_name());

    // Order 2, a gift: stored as the enum after payment, then loaded and resumed.
    println!("order 2 (gift, stored after payment and resumed):");
    let order = Machine::new(Submitted {
        order: 2,
        items: vec!["tea", "mug"],
        gift: true,
    });
    let SubmittedNext::Reserved(order) = reserve(order, &mut services) else {
        panic!("tea and mugs are in stock");
    };
    let ReservedNext::Paid(order) = charge(order, &mut services) else {
        panic!("order 2's card is accepted");
    };
    let stored: Checkout = order.into();
    println!("    stored as {stored:?}");
    let loaded = Machine::<Paid>::try_from(stored.clone()).expect("stored as paid");
    let wrong = Machine::<Reserved>::try_from(stored).expect_err("it is paid, not reserved");
    println!("    loading it as `Reserved` fails: {wrong}");
    let done = resume(loaded.into(), &mut services);
    println!("    ended as {done:?}");

    // Order 3: the card is declined; the reservation is released, customer and support told.
    println!("order 3 (payment declined):");
    let done = resume(
        Checkout::Submitted {
            order: 3,
            items: vec!["mug"],
            gift: false,
        },
        &mut services,
    );
    println!("    ended as {done:?}");

    // Order 4: a kettle, which is out of stock.
    println!("order 4 (out of stock):");
    let done = resume(
        Checkout::Submitted {
            order: 4,
            items: vec!["kettle"],
            gift: false,
        },
        &mut services,
    );
    println!("    ended as {done:?}");

    println!("notifications:");
    for message in &services.outbox {
        println!("    {message}");
    }
}
