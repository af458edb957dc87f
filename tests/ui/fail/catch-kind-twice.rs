use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), catch(gateway => Declined), catch(gateway | _ => Paid))]
    Reserved,
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Declined,
}

fn main() {}
