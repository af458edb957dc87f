use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped))]
    Paid,
    #[fsm(terminl)]
    Shipped,
}

fn main() {}
