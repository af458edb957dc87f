use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {}

fn main() {}
