// Macros of the user's named like std's (`matches`, `assert`, `format`, `vec`, `panic`): the
// generated code names every macro it calls by its absolute path, so none of these is
// expanded inside it, where the typed state's field is visible. Each would not compile.
#![allow(unused_macros)]

macro_rules! matches {
    ($($t:tt)*) => {
        compile_error!("the derive expanded the user's `matches!`")
    };
}
macro_rules! panic {
    ($($t:tt)*) => {
        compile_error!("the derive expanded the user's `panic!`")
    };
}
macro_rules! unreachable {
    ($($t:tt)*) => {
        compile_error!("the derive expanded the user's `unreachable!`")
    };
}
macro_rules! format {
    ($($t:tt)*) => {
        compile_error!("the derive expanded the user's `format!`")
    };
}

use fsm_core::{Context, Fsm, StepError};

#[derive(Fsm, Debug, Clone)]
#[fsm(derive(Debug, Clone, PartialEq))]
enum Checkout {
    #[fsm(initial, on(charge => Paid | Declined), catch(gateway | timeout => Declined))]
    Reserved { order: u32 },
    #[fsm(on(ship => Shipped), wait)]
    Paid { order: u32 },
    #[fsm(terminal)]
    Shipped,
    #[fsm(terminal(failure))]
    Declined,
}

use checkout::*;

struct Shop;

impl checkout::Steps for Shop {
    async fn reserved(&self, s: Machine<Reserved>, _: Context) -> Result<ReservedNext, StepError> {
        Ok(s.charge(|r| Paid { order: r.order }).into())
    }
    async fn paid(&self, _: Machine<Paid>, _: Context, _: fsm_core::TaskToken) -> Result<(), StepError> {
        Ok(())
    }
    fn catch_reserved_to_declined(&self, _: Reserved, _: &StepError) -> Declined {
        Declined
    }
}

fn main() {
    let any = AnyState::from(Checkout::Paid { order: 1 });
    assert!(std::matches!(any, AnyState::Paid(_)));
}
