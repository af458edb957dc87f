//! An enum whose name in snake case is a keyword gets a raw module name (`Move` -> `r#move`),
//! and states and events may be raw identifiers too.
use fsm_core::{Context, Fsm, StepError};

#[derive(Fsm)]
enum Move {
    #[fsm(initial, on(r#try => Played | Illegal))]
    Proposed,
    #[fsm(terminal)]
    Played,
    #[fsm(terminal(failure))]
    Illegal,
}

#[derive(Fsm)]
enum Crate {
    #[fsm(initial, on(open => Opened))]
    Sealed,
    #[fsm(terminal)]
    Opened,
}

/// A state named like a keyword gets a raw step method: `Match` -> `r#match`.
#[derive(Fsm, Clone)]
enum Game {
    #[fsm(initial, on(start => Match))]
    Lobby,
    #[fsm(on(self_ => Overtime), on(_2 => Over))]
    Match,
    #[fsm(on(_1 => Over))]
    Overtime,
    #[fsm(terminal)]
    Over,
}

struct Referee;

impl game::Steps for Referee {
    async fn lobby(&self, l: game::Machine<game::Lobby>, _: Context) -> Result<game::Machine<game::Match>, StepError> {
        Ok(l.start(|_| game::Match))
    }
    async fn r#match(&self, m: game::Machine<game::Match>, _: Context) -> Result<game::MatchNext, StepError> {
        Ok(m.self_(|_| game::Overtime).into())
    }
    async fn overtime(&self, m: game::Machine<game::Overtime>, _: Context) -> Result<game::Machine<game::Over>, StepError> {
        Ok(m._1(|_| game::Over))
    }
}

fn main() {
    assert_eq!(Game::DEFINITION.transitions[1].event, "self_");
    let played = r#move::Machine::new(r#move::Proposed).r#try(|_| r#move::Played);
    assert_eq!(Move::from(played).state_name(), "Played");
    let opened = crate_::Machine::new(crate_::Sealed).open(|_| crate_::Opened);
    assert_eq!(Crate::from(opened).state_name(), "Opened");
}
