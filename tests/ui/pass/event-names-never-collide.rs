//! No event name can collide with a type the derive generates: a branching event's choice
//! enums live in a module named like the event, under the machine's `choice` module
//! (`choice::next::Reserved`), so an event called `next` (whose enum, named by joining, would
//! have been `ReservedNext`, the state's `Next` enum), `b_c` from `A` beside `c` from `AB`
//! (both `ABC` by joining), or events named like the generated items (`choice`, `typestate`)
//! or like a state (`Paid`) are all ordinary events.
#![allow(non_snake_case)]
use fsm_core::Fsm;

#[derive(Fsm, Debug, PartialEq)]
#[fsm(derive(Debug, PartialEq))]
enum Checkout {
    #[fsm(initial, on(next => Paid | Declined))]
    Reserved,
    #[fsm(on(bc => Declined | AB), on(choice => A | B))]
    Paid,
    #[fsm(on(c => A | Declined))]
    AB,
    #[fsm(on(b_c => Declined | Done))]
    A,
    #[fsm(on(typestate => C | Declined))]
    B,
    #[fsm(on(Paid => Done | Declined))]
    C,
    #[fsm(terminal)]
    Done,
    #[fsm(terminal(failure))]
    Declined,
}

use checkout::*;

fn paid() -> Machine<Paid> {
    let paid: ReservedNext = Machine::new(Reserved).next(|_| choice::next::Reserved::Paid(Paid)).into();
    let ReservedNext::Paid(paid) = paid else { panic!("next chose Paid") };
    paid
}

fn main() {
    let ab: PaidNext = paid().bc(|_| choice::bc::Paid::AB(AB)).into();
    let PaidNext::AB(ab) = ab else { panic!("bc chose AB") };
    let a: ABNext = ab.c(|_| choice::c::AB::A(A)).into();
    let ABNext::A(a) = a else { panic!("c chose A") };
    let done: ANext = a.b_c(|_| choice::b_c::A::Done(Done)).into();
    assert_eq!(Checkout::from(done), Checkout::Done);

    let b: PaidNext = paid().choice(|_| choice::choice::Paid::B(B)).into();
    let PaidNext::B(b) = b else { panic!("choice chose B") };
    let c: BNext = b.typestate(|_| choice::typestate::B::C(C)).into();
    let BNext::C(c) = c else { panic!("typestate chose C") };
    let declined: CNext = c.Paid(|_| choice::Paid::C::Declined(Declined)).into();
    assert_eq!(Checkout::from(declined), Checkout::Declined);
}
