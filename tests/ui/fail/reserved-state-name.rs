use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Machine))]
    Paid,
    #[fsm(terminal)]
    Machine,
}

fn main() {}
