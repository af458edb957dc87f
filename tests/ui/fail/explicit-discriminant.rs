use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped))]
    Paid = 1,
    #[fsm(terminal)]
    Shipped = 2,
}

fn main() {}
