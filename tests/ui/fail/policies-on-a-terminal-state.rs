use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shipped))]
    Paid,
    #[fsm(terminal, retry(max_attempts = 2), timeout_ms = 100, catch(lost => Paid))]
    Shipped,
}

fn main() {}
