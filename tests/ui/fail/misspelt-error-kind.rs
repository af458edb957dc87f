// A step raises an error kind by the constant the derive generates for each kind its `catch`
// routes name: a misspelt kind does not compile (a misspelt string would compile, and the
// error would silently not be routed).
use fsm_core::{Fsm, StepError};

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid), catch(gateway_unavailable | timeout => Declined))]
    Reserved,
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Declined,
}

fn charge() -> Result<(), StepError> {
    Err(StepError::retryable(checkout::errors::GATEWAY_UNAVAILABLE, "502"))?;
    Err(StepError::fatal(checkout::errors::GATEWAY_UNAVAILIBLE, "502"))
}

fn main() {
    let _ = charge();
}
