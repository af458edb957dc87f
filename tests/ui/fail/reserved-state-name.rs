use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Machine | r#AnyState | Steps | Reserved | ReservedCharge))]
    Paid,
    #[fsm(terminal)]
    Machine,
    #[fsm(terminal)]
    r#AnyState,
    #[fsm(terminal)]
    Steps,
    #[fsm(on(charge => Machine | Steps))]
    Reserved,
    #[fsm(terminal)]
    ReservedCharge,
}

fn main() {}
