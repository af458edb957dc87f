use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid), retry(max_attempts = 3, intervall_ms = 100))]
    Reserved,
    #[fsm(on(ship => Shipped), retry(backoff_rate = 0.5), timeout_ms = 0)]
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
