use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(pay => Paid), on(cancel => Cancelled))]
    Submitted,
    #[fsm(on(hold => OnHold))]
    Paid,
    #[fsm(on(resume => Paid))]
    OnHold,
    #[fsm(terminal(failure))]
    Cancelled,
}

fn main() {}
