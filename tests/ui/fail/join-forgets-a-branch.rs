// A join must take every branch's end: one that leaves a branch out does not compile.
use fsm_core::{Context, Ended, Fsm, StepError};

#[derive(Fsm, Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Notify {
    #[fsm(initial, on(send => Sent))]
    Pending,
    #[fsm(terminal)]
    Sent,
}

#[derive(Fsm, Debug, Clone)]
enum Declined {
    #[fsm(initial, parallel(customer = Notify, support = Notify), on(release => Released))]
    Declined,
    #[fsm(terminal)]
    Released,
}

struct Services;

impl notify::Steps for Services {
    async fn pending(&self, n: notify::Machine<notify::Pending>, _: Context) -> Result<notify::Machine<notify::Sent>, StepError> {
        Ok(n.send(|_| notify::Sent))
    }
}

impl declined::Steps for Services {
    async fn declined(&self, _: &declined::Machine<declined::Declined>, _: Context) -> Result<(Notify, Notify), StepError> {
        Ok((notify::Machine::new(notify::Pending).into(), notify::Machine::new(notify::Pending).into()))
    }

    fn join_declined(
        &self,
        d: declined::Machine<declined::Declined>,
        customer: Ended<Notify>,
    ) -> declined::Machine<declined::Released> {
        let _ = customer;
        d.release(|_| declined::Released)
    }
}

fn main() {}
