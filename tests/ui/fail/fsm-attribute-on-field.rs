use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped))]
    Paid {
        #[fsm(initial)]
        order: u32,
    },
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
