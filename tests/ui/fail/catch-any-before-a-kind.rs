use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), catch(_ => Declined), catch(fraud => Paid))]
    Reserved,
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Declined,
}

fn main() {}
