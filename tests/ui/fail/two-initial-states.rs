use fsm_core::Fsm;

#[derive(Fsm)]
enum Door {
    #[fsm(initial, on(open => Open))]
    Closed,
    #[fsm(initial, on(remove => Removed))]
    Open,
    #[fsm(terminal)]
    Removed,
}

fn main() {}
