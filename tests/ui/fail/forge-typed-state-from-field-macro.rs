// A macro in a field type is expanded where the state structs are declared; there the typed
#![allow(non_local_definitions)] // the point of this fixture is such an impl
// state's field is out of reach, so the macro cannot make a paid order out of nothing.
use fsm_core::Fsm;

// The same macro also expands in the enum's own module, so these let the enum compile.
#[allow(dead_code)]
struct Machine<S> {
    state: S,
}
#[allow(dead_code)]
struct Paid {
    order: u32,
}

macro_rules! forge {
    () => {{
        impl Default for Machine<Paid> {
            fn default() -> Self {
                Machine { state: Paid { order: 666 } }
            }
        }
        0
    }};
}

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid))]
    Submitted { order: u32, _forge: [u8; forge!()] },
    #[fsm(on(ship => Shipped))]
    Paid { order: u32 },
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
