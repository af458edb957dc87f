// A task token's completion receives the waiting state, typed, and must return one of its
// next states: here it returns the parcel to `Packed`, which `Shipped` cannot move to.
use fsm_core::{Context, Executor, Fsm, StepError, TaskToken};

#[derive(Fsm, Debug, Clone)]
enum Parcel {
    #[fsm(initial, on(ship => Shipped))]
    Packed,
    #[fsm(wait, on(deliver => Delivered | Lost))]
    Shipped,
    #[fsm(terminal)]
    Delivered,
    #[fsm(terminal(failure))]
    Lost,
}

struct Carrier;

impl parcel::Steps for Carrier {
    async fn packed(
        &self,
        p: parcel::Machine<parcel::Packed>,
        _: Context,
    ) -> Result<parcel::Machine<parcel::Shipped>, StepError> {
        Ok(p.ship(|_| parcel::Shipped))
    }

    async fn shipped(
        &self,
        _: parcel::Machine<parcel::Shipped>,
        _: Context,
        _: TaskToken,
    ) -> Result<(), StepError> {
        Ok(())
    }
}

fn answer(executor: &Executor<Parcel, Carrier>, token: &str) {
    let _ = executor.complete::<parcel::Shipped, _>(token, |_shipped| {
        parcel::Machine::new(parcel::Packed)
    });
}

fn main() {}
