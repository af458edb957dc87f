use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(pay => Paid | Shipped))]
    Submitted,
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
