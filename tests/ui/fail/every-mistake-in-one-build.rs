use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(reserve => Reservd | OutOfStock))]
    Submitted,
    #[fsm(on(charge => Paid), on(charge => Declined))]
    Reserved,
    Paid,
    #[fsm(terminal(failure), on(retry => Submitted))]
    Declined,
    #[fsm(on(ship => Shipped))]
    Wrapped,
    #[fsm(terminal)]
    Shipped,
    #[fsm(terminal(failure), colour = red)]
    OutOfStock,
}

fn main() {}
