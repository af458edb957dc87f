// What a join receives comes only from a branch that ended: a join's input cannot be made
// from a starting state.
use fsm_core::{Ended, Fsm};

#[derive(Fsm, Debug, Clone)]
enum Notify {
    #[fsm(initial, on(send => Sent))]
    Pending,
    #[fsm(terminal)]
    Sent,
}

fn main() {
    let _: Ended<Notify> = Ended { id: fsm_core::ExecutionId::from_u128(1), position: 0, state: Notify::Pending, history: Default::default() };
}
