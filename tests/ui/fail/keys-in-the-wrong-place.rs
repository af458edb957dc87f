use fsm_core::Fsm;

#[derive(Fsm)]
#[fsm(initial)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped), module = orders)]
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
