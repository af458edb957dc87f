// A branch runs inside its parent's step, where nobody could answer a task token.
use fsm_core::Fsm;

#[derive(Fsm, Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Approval {
    #[fsm(initial, wait, on(approve => Approved))]
    Asked,
    #[fsm(terminal)]
    Approved,
}

#[derive(Fsm, Debug, Clone)]
enum Release {
    #[fsm(initial, parallel(legal = Approval, finance = Approval), on(go => Released))]
    Proposed,
    #[fsm(terminal)]
    Released,
}

fn main() {}
