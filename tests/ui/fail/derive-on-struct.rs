use fsm_core::Fsm;

#[derive(Fsm)]
struct Checkout {
    paid: bool,
}

fn main() {}
