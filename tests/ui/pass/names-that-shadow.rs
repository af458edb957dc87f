//! A state named like the type it holds, a field of type `Self`, and a state named like a type
//! of the enum's module: field types keep the meaning they have in the enum's module.
use fsm_core::Fsm;

#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub cents: u64,
}

#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Ledger {
    #[fsm(initial, on(pay => Payment))]
    Open,
    #[fsm(on(settle => Settled))]
    Payment(Payment),
    #[fsm(terminal)]
    Settled { previous: Option<Box<Self>> },
}

fn main() {
    let open = ledger::Machine::new(ledger::Open);
    let paid = open.pay(|_| ledger::Payment(Payment { cents: 5 }));
    assert_eq!(paid.0.cents, 5);
    let settled = paid.settle(|p| ledger::Settled { previous: Some(Box::new(Ledger::Payment(p.0))) });
    assert!(matches!(Ledger::from(settled), Ledger::Settled { previous: Some(_) }));
}
