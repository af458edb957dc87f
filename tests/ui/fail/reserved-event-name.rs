use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(new => Shipped))]
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
