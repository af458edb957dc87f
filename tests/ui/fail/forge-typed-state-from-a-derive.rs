// A derive named in `#[fsm(derive(...))]` is the user's code, whatever it is called: here a
// crate's `Debug` takes precedence over std's through `#[macro_use]`, and tries to build a
// `Machine<Paid>` from a plain `Paid` on every type it derives for. The derive runs only where
// `Machine`'s field is private, so each attempt fails; no typed state is forged.
#[macro_use]
extern crate forging_derive;

use fsm_core::Fsm;

#[derive(Fsm)]
#[fsm(derive(Debug))]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined))]
    Reserved { order: u32 },
    #[fsm(on(ship => Shipped))]
    Paid { order: u32 },
    #[fsm(terminal)]
    Shipped,
    #[fsm(terminal(failure))]
    Declined,
}

use checkout::*;

fn main() {
    // An order that was never paid, shipped.
    let paid: Machine<Paid> = AnyState::forge(Paid { order: 666 });
    let _shipped = paid.ship(|_| Shipped);
}
