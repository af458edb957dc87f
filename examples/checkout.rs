//! The flagship: an order's checkout across inventory, payment, gift wrapping and shipping,
//! run on the executor against simulated services.
//!
//! - order 1: the payment gateway fails twice, then succeeds (retries with backoff);
//! - order 2: the card is declined: the reservation is released, customer and support told;
//! - order 3: a gift: wrapped before it ships;
//! - order 4: out of stock;
//! - order 5: stored half-way (paid) by an earlier process, loaded back and resumed.
//!
//! Each step receives a typed state and returns only what its events allow: a step that
//! tried to ship an unpaid order would not compile. Run with `cargo run --example checkout`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use fsm_core::{Context, Executor, Fsm, StepError};

pub type OrderId = u32;
pub type Sku = &'static str;

/// One order's checkout.
#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Checkout {
    /// The customer placed the order.
    #[fsm(initial, on(reserve => Reserved | OutOfStock), timeout_ms = 2000)]
    Submitted {
        order: OrderId,
        items: Vec<Sku>,
        gift: bool,
    },
    /// Inventory is held for the order; charge the customer.
    #[fsm(
        on(charge => Paid | PaymentDeclined),
        retry(max_attempts = 3, interval_ms = 100, backoff_rate = 2.0, jitter = full),
        timeout_ms = 1000,
        catch(gateway_unavailable | timeout => PaymentDeclined)
    )]
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
    /// The payment failed; release the reservation and tell the customer and support.
    #[fsm(on(release => Cancelled), retry(max_attempts = 5, interval_ms = 50))]
    PaymentDeclined {
        order: OrderId,
        reservation: u64,
        reason: String,
    },
    /// On its way to the customer.
    #[fsm(terminal)]
    Shipped { order: OrderId, tracking: String },
    /// Nothing to sell.
    #[fsm(terminal(failure))]
    OutOfStock { order: OrderId },
    /// Cancelled after a failed payment.
    #[fsm(terminal(failure))]
    Cancelled { order: OrderId, reason: String },
}

use checkout::*;

/// Simulated services: each call takes `latency`, like a network round trip.
#[derive(Default)]
pub struct Services {
    pub latency: Duration,
    pub stock: Mutex<HashMap<Sku, u32>>,
    pub reservations: Mutex<HashMap<u64, Vec<Sku>>>,
    pub next_reservation: AtomicU64,
    /// How many more times the gateway fails for an order before it answers.
    pub gateway_failures: Mutex<HashMap<OrderId, u32>>,
    pub declined: Vec<OrderId>,
    /// Idempotency keys of the charges made, so that a retried charge is not made twice.
    pub charges: Mutex<HashMap<String, String>>,
    pub outbox: Mutex<Vec<String>>,
}

impl Services {
    async fn latency(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    async fn reserve(&self, items: &[Sku]) -> Option<u64> {
        self.latency().await;
        let mut stock = self.stock.lock().unwrap();
        if items
            .iter()
            .any(|sku| stock.get(sku).copied().unwrap_or(0) == 0)
        {
            return None;
        }
        for sku in items {
            *stock.entry(sku).or_default() -= 1;
        }
        let id = 100 + self.next_reservation.fetch_add(1, Ordering::Relaxed);
        self.reservations.lock().unwrap().insert(id, items.to_vec());
        Some(id)
    }

    async fn release(&self, reservation: u64) {
        self.latency().await;
        let items = self
            .reservations
            .lock()
            .unwrap()
            .remove(&reservation)
            .unwrap_or_default();
        let mut stock = self.stock.lock().unwrap();
        for sku in items {
            *stock.entry(sku).or_default() += 1;
        }
    }

    /// `Ok(Ok(payment))` charged, `Ok(Err(reason))` declined, `Err` the gateway is down.
    async fn charge(
        &self,
        order: OrderId,
        key: String,
    ) -> Result<Result<String, String>, StepError> {
        self.latency().await;
        if let Some(left) = self
            .gateway_failures
            .lock()
            .unwrap()
            .get_mut(&order)
            .filter(|n| **n > 0)
        {
            *left -= 1;
            return Err(StepError::retryable(
                "gateway_unavailable",
                "payment gateway answered 503",
            ));
        }
        if self.declined.contains(&order) {
            return Ok(Err("card declined by issuer".to_owned()));
        }
        let mut charges = self.charges.lock().unwrap();
        let payment = charges
            .entry(key)
            .or_insert_with(|| format!("pay_{order:04}"));
        Ok(Ok(payment.clone()))
    }

    async fn notify(&self, to: &str, message: String) {
        self.latency().await;
        self.outbox
            .lock()
            .unwrap()
            .push(format!("to {to}: {message}"));
    }
}

impl Steps for Services {
    async fn submitted(
        &self,
        order: Machine<Submitted>,
        _: Context,
    ) -> Result<SubmittedNext, StepError> {
        Ok(match self.reserve(&order.items).await {
            Some(reservation) => order
                .reserve(|s| Reserved {
                    order: s.order,
                    reservation,
                    gift: s.gift,
                })
                .into(),
            None => order.reserve(|s| OutOfStock { order: s.order }).into(),
        })
    }

    async fn reserved(
        &self,
        order: Machine<Reserved>,
        cx: Context,
    ) -> Result<ReservedNext, StepError> {
        // The key is the same on every retry of this step: the gateway charges once.
        Ok(
            match self
                .charge(order.order, cx.idempotency_key.to_string())
                .await?
            {
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
            },
        )
    }

    async fn paid(&self, order: Machine<Paid>, _: Context) -> Result<PaidNext, StepError> {
        self.latency().await;
        Ok(if order.gift {
            order.wrap(|p| Wrapped { order: p.order }).into()
        } else {
            order
                .ship(|p| Shipped {
                    order: p.order,
                    tracking: format!("1Z{:06}", p.order),
                })
                .into()
        })
    }

    async fn wrapped(
        &self,
        order: Machine<Wrapped>,
        _: Context,
    ) -> Result<Machine<Shipped>, StepError> {
        self.latency().await;
        Ok(order.ship(|w| Shipped {
            order: w.order,
            tracking: format!("1Z{:06}", w.order),
        }))
    }

    async fn payment_declined(
        &self,
        order: Machine<PaymentDeclined>,
        _: Context,
    ) -> Result<Machine<Cancelled>, StepError> {
        self.release(order.reservation).await;
        self.notify(
            "customer",
            format!("order {} cancelled: {}", order.order, order.reason),
        )
        .await;
        self.notify(
            "support",
            format!("order {}: payment failed ({})", order.order, order.reason),
        )
        .await;
        Ok(order.release(|d| Cancelled {
            order: d.order,
            reason: d.reason,
        }))
    }

    fn catch_reserved_to_payment_declined(
        &self,
        failed: Reserved,
        error: &StepError,
    ) -> PaymentDeclined {
        PaymentDeclined {
            order: failed.order,
            reservation: failed.reservation,
            reason: format!("payment could not be taken: {}", error.message()),
        }
    }
}

#[tokio::main]
async fn main() {
    let services = Services {
        latency: Duration::from_millis(5),
        stock: Mutex::new(HashMap::from([("mug", 10), ("tea", 10), ("kettle", 0)])),
        gateway_failures: Mutex::new(HashMap::from([(1, 2)])),
        declined: vec![2],
        ..Services::default()
    };
    print!("{}", Checkout::DEFINITION);
    let executor = Executor::<Checkout, _>::new(services);

    // Order 5 was paid by an earlier process and stored as the enum; load it back as a typed
    // state (which checks the state it is in) before handing it to the executor.
    let stored = Checkout::Paid {
        order: 5,
        payment: "pay_0005".into(),
        gift: false,
    };
    let loaded = Machine::<Paid>::try_from(stored.clone()).expect("stored as paid");
    if let Err(wrong) = Machine::<Reserved>::try_from(stored) {
        println!("\nloading order 5 as `Reserved` is refused: {wrong}");
    }

    let orders = [
        (
            "order 1: gateway fails twice, then succeeds",
            Machine::new(Submitted {
                order: 1,
                items: vec!["mug"],
                gift: false,
            })
            .into(),
        ),
        (
            "order 2: card declined",
            Machine::new(Submitted {
                order: 2,
                items: vec!["tea"],
                gift: false,
            })
            .into(),
        ),
        (
            "order 3: a gift",
            Machine::new(Submitted {
                order: 3,
                items: vec!["tea", "mug"],
                gift: true,
            })
            .into(),
        ),
        (
            "order 4: out of stock",
            Machine::new(Submitted {
                order: 4,
                items: vec!["kettle"],
                gift: false,
            })
            .into(),
        ),
        ("order 5: resumed from storage", Checkout::from(loaded)),
    ];
    // All orders run at once on the executor.
    let running: Vec<_> = orders
        .into_iter()
        .map(|(title, start)| (title, executor.spawn(start)))
        .collect();
    for (title, handle) in running {
        let outcome = handle.await.expect("the execution task finished");
        println!(
            "\n{title}: {:?}, ended in {:?}\n{}",
            outcome.status, outcome.state, outcome.history
        );
    }

    println!("notifications:");
    for message in executor.steps().outbox.lock().unwrap().iter() {
        println!("    {message}");
    }
}
