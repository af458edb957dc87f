use fsm_core::Fsm;

#[derive(Fsm)]
enum Door {
    #[fsm(initial, terminal)]
    Closed,
}

fn main() {}
