use fsm_core::Fsm;

#[derive(Fsm)]
enum Door {
    #[fsm(on(open => Open))]
    Closed,
    #[fsm(terminal)]
    Open,
}

fn main() {}
