use fsm_core::Fsm;

#[derive(Fsm)]
union Checkout {
    paid: u8,
}

fn main() {}
