use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shiped))]
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
