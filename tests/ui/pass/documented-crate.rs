//! A crate that denies missing docs and warnings: the generated items are documented, or
//! carry the docs the user gave the enum.
#![deny(missing_docs, warnings)]

use fsm_core::{Context, Fsm, StepError};

/// A subscription.
#[derive(Fsm, Debug, Clone)]
#[fsm(derive(Debug, Clone))]
pub enum Subscription {
    /// Waiting for the first payment.
    #[fsm(initial, on(pay => Active | Lapsed), retry, catch(_ => Lapsed))]
    Trial {
        /// Days left.
        days: u32,
    },
    /// Paid up.
    #[fsm(on(cancel => Lapsed))]
    Active(u64),
    /// Over.
    #[fsm(terminal(failure))]
    Lapsed,
}

/// The subscription's steps.
pub struct Billing;

impl subscription::Steps for Billing {
    async fn trial(
        &self,
        s: subscription::Machine<subscription::Trial>,
        _: Context,
    ) -> Result<subscription::TrialNext, StepError> {
        Ok(s.pay(|_| subscription::Active(1)).into())
    }
    async fn active(
        &self,
        s: subscription::Machine<subscription::Active>,
        _: Context,
    ) -> Result<subscription::Machine<subscription::Lapsed>, StepError> {
        Ok(s.cancel(|_| subscription::Lapsed))
    }
    fn catch_trial_to_lapsed(&self, _: subscription::Trial, _: &StepError) -> subscription::Lapsed {
        subscription::Lapsed
    }
}

fn main() {}
