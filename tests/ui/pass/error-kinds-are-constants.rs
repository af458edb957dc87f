// The derive generates a constant per error kind the machine's `catch` routes name; free
// strings still work for kinds no route names.
use fsm_core::{Fsm, StepError};

#[derive(Fsm)]
enum Checkout {
    #[fsm(initial, on(charge => Paid), catch(gateway_unavailable | timeout => Declined), catch(r#type => Declined))]
    Reserved,
    #[fsm(on(ship => Shipped), catch(gateway_unavailable => Refunded))]
    Paid,
    #[fsm(terminal)]
    Shipped,
    #[fsm(terminal(failure))]
    Declined,
    #[fsm(terminal(failure))]
    Refunded,
}

fn main() {
    assert_eq!(checkout::errors::GATEWAY_UNAVAILABLE, "gateway_unavailable");
    assert_eq!(checkout::errors::TIMEOUT, StepError::TIMEOUT);
    assert_eq!(checkout::errors::TYPE, "type");
    let routed = StepError::fatal(checkout::errors::GATEWAY_UNAVAILABLE, "502");
    assert_eq!(routed.kind(), "gateway_unavailable");
    let free = StepError::retryable("rate_limited", "429");
    assert_eq!(free.kind(), "rate_limited");
}
