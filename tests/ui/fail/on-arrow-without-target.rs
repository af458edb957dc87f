use fsm_core::Fsm;

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge =>))]
    Reserved,
    #[fsm(on(ship => Shipped |), catch(timeout =>))]
    Paid,
    #[fsm(on(close => 5))]
    Shipped,
    #[fsm(terminal)]
    Closed,
}

fn main() {}
