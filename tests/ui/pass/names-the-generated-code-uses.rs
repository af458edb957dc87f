//! Declarations whose names are the names generated code relies on: states called like the
//! prelude's items (`None`, `Some`, `Ok`, `Err`, `Option`, `From`, `Into`, `Send`, `usize`),
//! fields called like the step loop's locals (`__driver`, `__steps`, `__error`) beside a
//! `catch`, an event called `into`, a field whose type is the user's own `Steps`, names written
//! as raw identifiers, a block in an array length, and a path through
//! the user's own module named like the generated module's private one (`typestate`). Each compiles, and runs on the executor.
#![allow(non_camel_case_types)]
use fsm_core::{Context, Executor, Fsm, Status, StepError};

/// The user's own module named like the generated module's private one.
pub mod typestate {
    pub type Count = u32;
}

/// The user's own type named like the generated step trait.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps(u32);

#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Prelude {
    #[fsm(initial, on(into => Some | None), catch(_ => Err))]
    Option { __driver: u32, __steps: Steps, __error: [u8; { const N: usize = 4; N }] },
    #[fsm(on(r#go => r#Ok), catch(_ => Err))]
    Some { __steps: u32, __error: String },
    #[fsm(on(go => From | Into))]
    r#Ok,
    #[fsm(on(r#return => usize))]
    From(u32),
    #[fsm(on(r#return => usize))]
    Into,
    #[fsm(on(stop => Send))]
    None,
    #[fsm(terminal)]
    Send { count: typestate::Count },
    #[fsm(terminal)]
    usize,
    #[fsm(terminal(failure))]
    Err { __error: String },
}

struct Handlers;

impl prelude::Steps for Handlers {
    async fn option(&self, s: prelude::Machine<prelude::Option>, _: Context) -> Result<prelude::OptionNext, StepError> {
        if s.__driver == 0 {
            return Err(StepError::fatal("zero", "no driver"));
        }
        // The event `into` is a method of the typed state, so `From` converts to the `Next` enum.
        let some = s.into(|o| prelude::Some { __steps: o.__steps.0 + o.__driver, __error: format!("{:?}", o.__error) });
        Ok(prelude::OptionNext::from(some))
    }
    async fn some(&self, s: prelude::Machine<prelude::Some>, _: Context) -> Result<prelude::Machine<prelude::Ok>, StepError> {
        Ok(s.go(|_| prelude::Ok))
    }
    async fn ok(&self, s: prelude::Machine<prelude::Ok>, _: Context) -> Result<prelude::OkNext, StepError> {
        Ok(prelude::OkNext::from(s.go(|_| prelude::From(7))))
    }
    async fn from(&self, s: prelude::Machine<prelude::From>, _: Context) -> Result<prelude::Machine<prelude::usize>, StepError> {
        Ok(s.r#return(|_| prelude::usize))
    }
    async fn into(&self, s: prelude::Machine<prelude::Into>, _: Context) -> Result<prelude::Machine<prelude::usize>, StepError> {
        Ok(s.r#return(|_| prelude::usize))
    }
    async fn none(&self, s: prelude::Machine<prelude::None>, _: Context) -> Result<prelude::Machine<prelude::Send>, StepError> {
        Ok(s.stop(|_| prelude::Send { count: 1 }))
    }
    fn catch_option_to_err(&self, failed: prelude::Option, error: &StepError) -> prelude::Err {
        prelude::Err { __error: format!("{} {:?}: {error}", failed.__driver, failed.__steps) }
    }
    fn catch_some_to_err(&self, failed: prelude::Some, _: &StepError) -> prelude::Err {
        prelude::Err { __error: failed.__error }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let executor = Executor::<Prelude, _>::new(Handlers);
    let start = |driver| prelude::Option { __driver: driver, __steps: Steps(1), __error: [0; 4] };
    let done = executor.run(prelude::Machine::new(start(2))).await;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.state, Prelude::usize);
    let path: Vec<&str> = done.history.transitions().map(|t| Prelude::DEFINITION.transitions[t].event).collect();
    assert_eq!(path, ["into", "go", "go", "return"]);
    let caught = executor.run(prelude::Machine::new(start(0))).await;
    assert_eq!(caught.status, Status::Failed);
    assert_eq!(caught.state, Prelude::Err { __error: "0 Steps(1): zero: no driver (not retryable)".into() });
}
