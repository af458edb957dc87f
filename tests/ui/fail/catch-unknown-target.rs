use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), catch(gateway => Decline))]
    Reserved,
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Declined,
}

fn main() {}
