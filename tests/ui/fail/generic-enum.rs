use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout<T> {
    #[fsm(initial, on(ship => Shipped))]
    Paid(T),
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
