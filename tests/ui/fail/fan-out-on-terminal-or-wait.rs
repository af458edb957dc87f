use fsm_core::Fsm;

#[derive(Fsm, Debug, Clone)]
enum Parcel {
    #[fsm(initial, on(label => Labelled))]
    Packed,
    #[fsm(terminal)]
    Labelled,
}

#[derive(Fsm, Debug, Clone)]
enum Shipment {
    #[fsm(initial, wait, map(Parcel), on(ship => Shipped))]
    Packing,
    #[fsm(terminal, parallel(a = Parcel))]
    Shipped,
}

fn main() {}
