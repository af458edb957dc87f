use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Machine | r#AnyState | Steps | Reserved | choice | ReservedNext))]
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
    choice,
    #[fsm(terminal)]
    ReservedNext,
}

fn main() {}
