// `wait` takes nothing or `timeout_ms = N` (within ASL's range), and belongs on a state with
// a step.
use fsm_core::Fsm;

#[derive(Fsm)]
enum Parcel {
    #[fsm(initial, wait = 5, on(ship => Shipped))]
    Packed,
    #[fsm(wait(timeout_ms = 0), on(deliver => Delivered))]
    Shipped,
    #[fsm(wait(timeout = 10), on(sign => Signed))]
    Delivered,
    #[fsm(wait, wait, on(archive => Archived))]
    Signed,
    #[fsm(terminal, wait)]
    Archived,
}

fn main() {}
