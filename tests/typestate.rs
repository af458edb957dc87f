//! The typestate layer as a user meets it: typed states, events, conversions to and from the
//! enum, and the definition.

use std::mem::size_of;

use fsm_core::{Fsm, StateKind, Transition};

#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Checkout {
    #[fsm(initial, on(reserve => Reserved | OutOfStock))]
    Submitted {
        order: u32,
        items: Vec<&'static str>,
        gift: bool,
    },
    #[fsm(on(charge => Paid | PaymentDeclined))]
    Reserved {
        order: u32,
        reservation: u64,
        gift: bool,
    },
    #[fsm(on(wrap => Wrapped), on(ship => Shipped))]
    Paid {
        order: u32,
        payment: u64,
        gift: bool,
    },
    #[fsm(on(ship => Shipped))]
    Wrapped(u32),
    #[fsm(on(release => Cancelled))]
    PaymentDeclined { order: u32, reason: String },
    #[fsm(terminal)]
    Shipped { tracking: String },
    #[fsm(terminal(failure))]
    OutOfStock,
    #[fsm(terminal(failure))]
    Cancelled { reason: String },
}

use checkout::*;

fn submitted(order: u32, gift: bool) -> Machine<Submitted> {
    Machine::new(Submitted {
        order,
        items: vec!["mug"],
        gift,
    })
}

fn every_state() -> Vec<Checkout> {
    vec![
        Checkout::Submitted {
            order: 1,
            items: vec!["mug"],
            gift: true,
        },
        Checkout::Reserved {
            order: 1,
            reservation: 9,
            gift: true,
        },
        Checkout::Paid {
            order: 1,
            payment: 7,
            gift: false,
        },
        Checkout::Wrapped(1),
        Checkout::PaymentDeclined {
            order: 1,
            reason: "no funds".into(),
        },
        Checkout::Shipped {
            tracking: "1Z".into(),
        },
        Checkout::OutOfStock,
        Checkout::Cancelled {
            reason: "no funds".into(),
        },
    ]
}

#[test]
fn a_typed_state_is_the_size_of_its_data() {
    assert_eq!(size_of::<Machine<Submitted>>(), size_of::<Submitted>());
    assert_eq!(size_of::<Machine<Paid>>(), size_of::<Paid>());
    assert_eq!(size_of::<Machine<Wrapped>>(), size_of::<u32>());
    assert_eq!(size_of::<Machine<OutOfStock>>(), 0);
}

#[test]
fn events_move_the_data_into_the_target_state() {
    let reserved = submitted(7, true).reserve(|s| Reserved {
        order: s.order,
        reservation: 40,
        gift: s.gift,
    });
    assert_eq!(
        (reserved.order, reserved.reservation, reserved.gift),
        (7, 40, true)
    );
    let paid = match reserved
        .charge(|r| Paid {
            order: r.order,
            payment: 5,
            gift: r.gift,
        })
        .into()
    {
        ReservedNext::Paid(paid) => paid,
        ReservedNext::PaymentDeclined(_) => unreachable!("charged to `Paid`"),
    };
    let shipped = paid.wrap(|p| Wrapped(p.order)).ship(|w| Shipped {
        tracking: format!("1Z{}", w.0),
    });
    assert_eq!(
        Checkout::from(shipped),
        Checkout::Shipped {
            tracking: "1Z7".into()
        }
    );
}

#[test]
fn a_branch_chosen_at_run_time_has_one_type_and_knows_its_transition() {
    for in_stock in [true, false] {
        let order = submitted(1, false);
        let next: SubmittedNext = if in_stock {
            order
                .reserve(|s| Reserved {
                    order: s.order,
                    reservation: 1,
                    gift: s.gift,
                })
                .into()
        } else {
            order.reserve(|_| OutOfStock).into()
        };
        let t = next.transition();
        let d = Checkout::DEFINITION;
        assert_eq!(d.states[t.from].name, "Submitted");
        assert_eq!(t.event, "reserve");
        let expected = if in_stock { "Reserved" } else { "OutOfStock" };
        assert_eq!(d.states[t.to].name, expected);
        assert_eq!(Checkout::from(next).state_name(), expected);
    }
}

#[test]
fn every_state_round_trips_through_the_typed_form() {
    for value in every_state() {
        let typed = AnyState::from(value.clone());
        assert_eq!(Checkout::from(typed), value);
    }
}

#[test]
fn rehydration_names_the_expected_and_found_states_and_loses_nothing() {
    let stored = Checkout::Paid {
        order: 3,
        payment: 11,
        gift: true,
    };
    let paid = Machine::<Paid>::try_from(stored.clone()).expect("stored as paid");
    assert_eq!(paid.payment, 11);

    let err = Machine::<Reserved>::try_from(stored.clone()).unwrap_err();
    assert_eq!(err.expected(), "Reserved");
    assert_eq!(err.found(), "Paid");
    assert_eq!(err.to_string(), "expected state `Reserved`, found `Paid`");
    assert_eq!(err.into_inner(), stored);
}

#[test]
fn a_stored_value_resumes_as_whichever_typed_state_it_is_in() {
    let stored: Checkout = submitted(5, false)
        .reserve(|s| Reserved {
            order: s.order,
            reservation: 2,
            gift: s.gift,
        })
        .into();
    let resumed = match AnyState::from(stored) {
        AnyState::Reserved(r) => r.charge(|r| PaymentDeclined {
            order: r.order,
            reason: "expired".into(),
        }),
        other => panic!("stored as reserved, loaded as {:?}", Checkout::from(other)),
    };
    assert_eq!(resumed.reason, "expired");
}

#[test]
fn the_definition_is_the_declared_graph() {
    let d = Checkout::DEFINITION;
    assert_eq!(d.name, "Checkout");
    let names: Vec<_> = d.states.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "Submitted",
            "Reserved",
            "Paid",
            "Wrapped",
            "PaymentDeclined",
            "Shipped",
            "OutOfStock",
            "Cancelled"
        ]
    );
    assert_eq!(d.initial_state().name, "Submitted");
    let kinds: Vec<_> = d.states.iter().map(|s| s.kind).collect();
    use StateKind::*;
    assert_eq!(
        kinds,
        [Step, Step, Step, Step, Step, Success, Failure, Failure]
    );
    let edges: Vec<_> = d
        .transitions
        .iter()
        .map(|t: &Transition| (d.states[t.from].name, t.event, d.states[t.to].name))
        .collect();
    assert_eq!(
        edges,
        [
            ("Submitted", "reserve", "Reserved"),
            ("Submitted", "reserve", "OutOfStock"),
            ("Reserved", "charge", "Paid"),
            ("Reserved", "charge", "PaymentDeclined"),
            ("Paid", "wrap", "Wrapped"),
            ("Paid", "ship", "Shipped"),
            ("Wrapped", "ship", "Shipped"),
            ("PaymentDeclined", "release", "Cancelled"),
        ]
    );
    assert_eq!(d.transition(2, 5).map(|t| t.event), Some("ship"));
    assert_eq!(d.transition(0, 5), None);
}

#[test]
fn the_enum_knows_its_state() {
    let names: Vec<_> = every_state()
        .iter()
        .map(|v| (v.state_name(), v.is_terminal()))
        .collect();
    assert_eq!(names[0], ("Submitted", false));
    assert_eq!(names[5], ("Shipped", true));
    assert_eq!(names[7], ("Cancelled", true));
}
