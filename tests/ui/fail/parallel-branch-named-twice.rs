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
    #[fsm(initial, parallel(first = Parcel, first = Parcel), on(ship => Shipped))]
    Packing,
    #[fsm(terminal)]
    Shipped,
}

fn main() {}
