use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, initial, on(ship => Shipped))]
    Paid,
    #[fsm(terminal, terminal(failure))]
    Shipped,
}

fn main() {}
