include!("../checkout.rs");

fn main() {
    // The typed state's field is private to the generated module.
    let _paid = Machine { state: Paid { order: 7 } };
}
