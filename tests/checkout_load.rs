//! 10,000 concurrent checkouts on one executor, on both cores, against the example's
//! simulated services with real latency and a mix of outcomes: every one must end in the
//! right terminal state with a consistent history.

#[allow(dead_code)]
#[path = "../examples/checkout.rs"]
mod example;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use example::checkout::{Machine, Submitted};
use example::{Checkout, Services};
use fsm_core::{EventKind, Executor, Fsm, Status};

const ORDERS: u32 = 10_000;

/// What each order is set up to do, by its number.
fn scenario(order: u32) -> &'static str {
    match order % 10 {
        0 => "out of stock",
        1 => "declined",
        2 => "gateway recovers",
        3 => "gateway down",
        4 => "gift",
        _ => "plain",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_checkouts_end_where_they_should() {
    let mut failures = HashMap::new();
    let mut declined = Vec::new();
    for order in 0..ORDERS {
        match scenario(order) {
            "declined" => declined.push(order),
            "gateway recovers" => drop(failures.insert(order, 2)),
            "gateway down" => drop(failures.insert(order, 100)),
            _ => {}
        }
    }
    let services = Services {
        latency: Duration::from_millis(2),
        stock: Mutex::new(HashMap::from([
            ("mug".into(), ORDERS),
            ("kettle".into(), 0),
        ])),
        gateway_failures: Mutex::new(failures),
        declined,
        ..Services::default()
    };
    let executor = Executor::<Checkout, _>::new(services);
    let handles: Vec<_> = (0..ORDERS)
        .map(|order| {
            let items = if scenario(order) == "out of stock" {
                vec!["kettle".into()].into()
            } else {
                vec!["mug".into()].into()
            };
            let gift = scenario(order) == "gift";
            executor.spawn(Machine::new(Submitted {
                order,
                items,
                gift,
                signature: false,
            }))
        })
        .collect();

    let def = Checkout::DEFINITION;
    let mut shipped = 0;
    for (order, handle) in (0..ORDERS).zip(handles) {
        let outcome = handle.await.expect("no execution task failed");
        let path: Vec<&str> = outcome
            .history
            .events()
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Transition { event, .. } => Some(event),
                _ => None,
            })
            .collect();
        let charge_attempts = outcome
            .history
            .events()
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::StepStarted {
                        state: "Reserved",
                        ..
                    }
                )
            })
            .count();
        match scenario(order) {
            "out of stock" => {
                assert_eq!(outcome.state, Checkout::OutOfStock { order });
                assert_eq!(path, ["reserve"]);
            }
            "declined" => {
                assert_eq!(
                    outcome.state,
                    Checkout::Cancelled {
                        order,
                        reason: "card declined by issuer".into()
                    }
                );
                assert_eq!(path, ["reserve", "charge", "release"]);
            }
            "gateway down" => {
                assert!(
                    matches!(&outcome.state, Checkout::Cancelled { reason, .. } if reason.contains("503"))
                );
                assert_eq!(path, ["reserve", "gateway_unavailable", "release"]);
                assert_eq!(charge_attempts, 4, "one attempt and three retries");
            }
            scenario => {
                shipped += 1;
                let tracking = format!("1Z{order:06}");
                assert_eq!(outcome.state, Checkout::Shipped { order, tracking });
                let expected: &[&str] = match scenario {
                    "gift" => &["reserve", "charge", "wrap", "ship"],
                    _ => &["reserve", "charge", "ship"],
                };
                assert_eq!(path, expected);
                let attempts = if scenario == "gateway recovers" { 3 } else { 1 };
                assert_eq!(charge_attempts, attempts, "order {order}");
            }
        }
        assert_eq!(
            outcome.is_success(),
            matches!(outcome.state, Checkout::Shipped { .. })
        );
        assert!(matches!(outcome.status, Status::Succeeded | Status::Failed));
        // The history starts and ends where the execution did, and every transition chains.
        let mut at = def.initial;
        for index in outcome.history.transitions() {
            assert_eq!(def.transitions[index].from, at);
            at = def.transitions[index].to;
        }
        assert_eq!(at, outcome.state.state_index());
    }

    let services = executor.steps();
    // Every released reservation went back on the shelf; every charge was made once.
    assert_eq!(services.stock.lock().unwrap()["mug"], ORDERS - shipped);
    assert!(services.reservations.lock().unwrap().len() as u32 == shipped);
    assert_eq!(services.charges.lock().unwrap().len() as u32, shipped);
    assert_eq!(
        services.outbox.lock().unwrap().len() as u32,
        2 * 2 * ORDERS / 10
    );
}
