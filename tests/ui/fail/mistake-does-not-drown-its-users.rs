use fsm_core::Fsm;

// One typo in the declaration: code that uses the machine reports nothing more.
#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(ship => Shiped))]
    Paid,
    #[fsm(terminal)]
    Shipped,
}

fn main() {
    let paid = checkout::Machine::new(checkout::Paid);
    let shipped = paid.ship(|_| checkout::Shipped);
    let stored: Checkout = Checkout::Paid;
    let _ = (shipped, fsm_core::Fsm::state_name(&stored));
}
