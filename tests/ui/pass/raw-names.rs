//! Names compare as Rust compares them: a state declared `r#Paid` is the target `Paid`, and an
//! event written `r#ship` in one place and `ship` in another is one event.
use fsm_core::Fsm;

#[derive(Fsm, Debug)]
enum Checkout {
    #[fsm(initial, on(charge => Paid | r#Declined))]
    Submitted,
    #[fsm(on(r#ship => Shipped))]
    r#Paid,
    #[fsm(on(ship => r#Shipped))]
    Declined,
    #[fsm(terminal)]
    Shipped,
}

fn main() {
    use checkout::*;
    let paid = Machine::new(Submitted).charge(|_| Paid);
    let shipped = paid.ship(|_| Shipped);
    assert_eq!(fsm_core::Fsm::state_name(&Checkout::from(shipped)), "Shipped");
    let events: Vec<&str> = Checkout::DEFINITION.transitions.iter().map(|t| t.event).collect();
    assert_eq!(events, ["charge", "charge", "ship", "ship"]);
}
