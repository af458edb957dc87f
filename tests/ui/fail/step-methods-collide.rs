use fsm_core::Fsm;

// The `Steps` trait names a method after each state with a step, and one after each error
// route: `Paid` and `PAID` would both be `paid`, `HttpOk` and `HTTPOk` both `http_ok`, and the
// state `CatchAToB` would be the route from `A` to `B`.
#[derive(Fsm)]
enum Request {
    #[fsm(initial, on(send => Paid | PAID | HttpOk | HTTPOk | CatchAToB | A))]
    Sent,
    #[fsm(on(done => B))]
    Paid,
    #[fsm(on(done => B))]
    PAID,
    #[fsm(on(done => B))]
    HttpOk,
    #[fsm(on(done => B))]
    HTTPOk,
    #[fsm(on(done => B))]
    CatchAToB,
    #[fsm(on(done => B), catch(_ => B))]
    A,
    #[fsm(terminal)]
    B,
}

fn main() {}
