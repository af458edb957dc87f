use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(new => Shipped | Wrapped))]
    Paid,
    #[fsm(on(r#new => Shipped))]
    Wrapped,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
