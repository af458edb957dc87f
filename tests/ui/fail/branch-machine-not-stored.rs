// With fsm-core's `durable` feature, a durable parent stores each branch as an execution of
// its own: a branch machine that serde cannot store is refused where the parent is derived.
use fsm_core::{Context, Ended, Fsm, StepError};

#[derive(Fsm, Debug, Clone)]
enum Label {
    #[fsm(initial, on(print => Printed))]
    Queued,
    #[fsm(terminal)]
    Printed,
}

#[derive(Fsm, Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Shipment {
    #[fsm(initial, map(Label), on(ship => Shipped))]
    Packing,
    #[fsm(terminal)]
    Shipped,
}

struct Printer;

impl label::Steps for Printer {
    async fn queued(&self, l: label::Machine<label::Queued>, _: Context) -> Result<label::Machine<label::Printed>, StepError> {
        Ok(l.print(|_| label::Printed))
    }
}

impl shipment::Steps for Printer {
    async fn packing(&self, _: &shipment::Machine<shipment::Packing>, _: Context) -> Result<Vec<Label>, StepError> {
        Ok(vec![label::Machine::new(label::Queued).into()])
    }

    fn join_packing(&self, s: shipment::Machine<shipment::Packing>, _: Vec<Ended<Label>>) -> shipment::Machine<shipment::Shipped> {
        s.ship(|_| shipment::Shipped)
    }
}

fn main() {}
