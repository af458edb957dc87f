// Only a state declared `#[fsm(wait)]` hands out task tokens, so only such a state can be
// completed.
use fsm_core::{Context, Executor, Fsm, StepError, TaskToken};

#[derive(Fsm, Debug, Clone)]
enum Parcel {
    #[fsm(initial, on(ship => Shipped))]
    Packed,
    #[fsm(wait, on(deliver => Delivered))]
    Shipped,
    #[fsm(terminal)]
    Delivered,
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
    let _ = executor.complete::<parcel::Packed, _>(token, |packed| packed.ship(|_| parcel::Shipped));
}

fn main() {}
