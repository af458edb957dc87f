use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped))]
    Paid,
    #[fsm(on(ship => Shipped))]
    Wrapped,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
