use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid), catch(gateway_down => Declined), catch(GATEWAY_DOWN => Paid))]
    Reserved,
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Declined,
}

fn main() {}
