//! Retry, timeout and catch declarations, the generated `Steps` trait implemented with
//! `async fn`, and a machine whose data is not `Send` (it keeps its typestate API).
use std::rc::Rc;

use fsm_core::{Context, Executor, Fsm, StepError};

#[derive(Fsm, Clone)]
pub enum Refund {
    #[fsm(
        initial,
        on(approve => Approved | Rejected),
        retry,
        timeout_ms = 250,
        catch(_ => Rejected)
    )]
    Requested { cents: u64 },
    #[fsm(on(pay => Paid), retry(max_attempts = 0, jitter = full, max_delay_ms = 10, backoff_rate = 3))]
    Approved { cents: u64 },
    #[fsm(terminal)]
    Paid,
    #[fsm(terminal(failure))]
    Rejected,
}

struct Desk;

impl refund::Steps for Desk {
    async fn requested(&self, r: refund::Machine<refund::Requested>, _: Context) -> Result<refund::RequestedNext, StepError> {
        Ok(if r.cents < 10_000 { r.approve(|r| refund::Approved { cents: r.cents }).into() } else { r.approve(|_| refund::Rejected).into() })
    }
    async fn approved(&self, a: refund::Machine<refund::Approved>, _: Context) -> Result<refund::Machine<refund::Paid>, StepError> {
        Ok(a.pay(|_| refund::Paid))
    }
    fn catch_requested_to_rejected(&self, _: refund::Requested, _: &StepError) -> refund::Rejected {
        refund::Rejected
    }
}

#[derive(Fsm)]
enum Shared {
    #[fsm(initial, on(drop_it => Gone))]
    Held(Rc<String>),
    #[fsm(terminal)]
    Gone,
}

fn main() {
    let executor = Executor::<Refund, _>::new(Desk);
    let _future = executor.run(refund::Machine::new(refund::Requested { cents: 5 }));
    let held = shared::Machine::new(shared::Held(Rc::new("x".into())));
    let _gone = held.drop_it(|_| shared::Gone);
}
