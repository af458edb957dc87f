use fsm_core::Fsm;

// Each policy field has the range Amazon States Language gives its counterpart.
#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid), retry(max_attempts = 4294967295))]
    Reserved,
    #[fsm(on(ship => Shipped), retry(interval_ms = 0), timeout_ms = -1)]
    Paid,
    #[fsm(on(close => Closed), retry(max_delay_ms = 40000000000), timeout_ms = 1.5)]
    Shipped,
    #[fsm(on(open => Opened), retry(backoff_rate = -2.0), timeout_ms = 100000000000)]
    Closed,
    #[fsm(terminal)]
    Opened,
}

fn main() {}
