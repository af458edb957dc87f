//! A machine larger than one dispatch function: the executor splits its dispatch into groups
//! of states, and every group must lead to the right step.

use std::sync::atomic::{AtomicBool, Ordering};

use fsm_core::{Context, EventKind, Executor, Fsm, StepError};

#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Long {
    #[fsm(initial, on(next => S1))]
    S0(u32),
    #[fsm(on(next => S2))]
    S1(u32),
    #[fsm(on(next => S3))]
    S2(u32),
    #[fsm(on(next => S4))]
    S3(u32),
    #[fsm(on(next => S5))]
    S4(u32),
    #[fsm(on(next => S6))]
    S5(u32),
    #[fsm(on(next => S7))]
    S6(u32),
    #[fsm(on(next => S8))]
    S7(u32),
    #[fsm(on(next => S9))]
    S8(u32),
    #[fsm(on(next => S10))]
    S9(u32),
    #[fsm(on(next => S11))]
    S10(u32),
    #[fsm(on(next => S12))]
    S11(u32),
    #[fsm(on(next => S13))]
    S12(u32),
    #[fsm(on(next => S14))]
    S13(u32),
    #[fsm(on(next => S15))]
    S14(u32),
    #[fsm(on(next => S16))]
    S15(u32),
    #[fsm(on(next => S17))]
    S16(u32),
    #[fsm(on(next => S18))]
    S17(u32),
    #[fsm(on(next => S19))]
    S18(u32),
    #[fsm(on(next => S20))]
    S19(u32),
    #[fsm(on(next => S21))]
    S20(u32),
    #[fsm(on(next => S22))]
    S21(u32),
    #[fsm(on(next => S23))]
    S22(u32),
    #[fsm(on(next => S24))]
    S23(u32),
    #[fsm(on(next => S25))]
    S24(u32),
    #[fsm(on(next => S26))]
    S25(u32),
    #[fsm(on(next => S27))]
    S26(u32),
    #[fsm(on(next => S28))]
    S27(u32),
    #[fsm(on(next => S29))]
    S28(u32),
    #[fsm(on(next => S30))]
    S29(u32),
    #[fsm(on(next => S31))]
    S30(u32),
    #[fsm(on(next => S32))]
    S31(u32),
    #[fsm(on(next => S33))]
    S32(u32),
    #[fsm(on(next => S34))]
    S33(u32),
    #[fsm(on(next => S35))]
    S34(u32),
    #[fsm(on(next => S36))]
    S35(u32),
    #[fsm(on(next => S37))]
    S36(u32),
    #[fsm(on(next => S38))]
    S37(u32),
    #[fsm(on(next => S39))]
    S38(u32),
    #[fsm(on(next => S40))]
    S39(u32),
    #[fsm(on(next => S41), retry(max_attempts = 1, interval_ms = 1))]
    S40(u32),
    #[fsm(on(next => S42))]
    S41(u32),
    #[fsm(on(next => S43))]
    S42(u32),
    #[fsm(on(next => S44))]
    S43(u32),
    #[fsm(on(next => S45))]
    S44(u32),
    #[fsm(on(next => S46))]
    S45(u32),
    #[fsm(on(next => S47))]
    S46(u32),
    #[fsm(on(next => S48))]
    S47(u32),
    #[fsm(on(next => S49))]
    S48(u32),
    #[fsm(on(next => S50))]
    S49(u32),
    #[fsm(on(next => S51))]
    S50(u32),
    #[fsm(on(next => S52))]
    S51(u32),
    #[fsm(on(next => S53))]
    S52(u32),
    #[fsm(on(next => S54))]
    S53(u32),
    #[fsm(on(next => S55))]
    S54(u32),
    #[fsm(on(next => S56))]
    S55(u32),
    #[fsm(on(next => S57))]
    S56(u32),
    #[fsm(on(next => S58))]
    S57(u32),
    #[fsm(on(next => S59))]
    S58(u32),
    #[fsm(on(next => S60))]
    S59(u32),
    #[fsm(on(next => S61))]
    S60(u32),
    #[fsm(on(next => S62))]
    S61(u32),
    #[fsm(on(next => S63))]
    S62(u32),
    #[fsm(on(next => S64))]
    S63(u32),
    #[fsm(on(next => S65))]
    S64(u32),
    #[fsm(on(next => S66))]
    S65(u32),
    #[fsm(on(next => S67))]
    S66(u32),
    #[fsm(on(next => S68))]
    S67(u32),
    #[fsm(on(next => S69))]
    S68(u32),
    #[fsm(on(next => S70))]
    S69(u32),
    #[fsm(terminal)]
    S70(u32),
}

use long::*;

/// Fails the first attempt of `S40`'s step when `flaky` is set.
#[derive(Default)]
struct Counter {
    flaky: bool,
    failed: AtomicBool,
}

/// One step per state: add one and move to the next state.
macro_rules! steps {
    ($($method:ident $from:ident $to:ident),* $(,)?) => {
        impl Steps for Counter {
            $(
                async fn $method(&self, state: Machine<$from>, cx: Context) -> Result<Machine<$to>, StepError> {
                    if stringify!($from) == "S40" && self.flaky && !self.failed.swap(true, Ordering::Relaxed) {
                        return Err(StepError::retryable("flaky", format!("attempt {}", cx.attempt)));
                    }
                    Ok(state.next(|s| $to(s.0 + 1)))
                }
            )*
        }
    };
}

steps!(
    s0 S0 S1,
    s1 S1 S2,
    s2 S2 S3,
    s3 S3 S4,
    s4 S4 S5,
    s5 S5 S6,
    s6 S6 S7,
    s7 S7 S8,
    s8 S8 S9,
    s9 S9 S10,
    s10 S10 S11,
    s11 S11 S12,
    s12 S12 S13,
    s13 S13 S14,
    s14 S14 S15,
    s15 S15 S16,
    s16 S16 S17,
    s17 S17 S18,
    s18 S18 S19,
    s19 S19 S20,
    s20 S20 S21,
    s21 S21 S22,
    s22 S22 S23,
    s23 S23 S24,
    s24 S24 S25,
    s25 S25 S26,
    s26 S26 S27,
    s27 S27 S28,
    s28 S28 S29,
    s29 S29 S30,
    s30 S30 S31,
    s31 S31 S32,
    s32 S32 S33,
    s33 S33 S34,
    s34 S34 S35,
    s35 S35 S36,
    s36 S36 S37,
    s37 S37 S38,
    s38 S38 S39,
    s39 S39 S40,
    s40 S40 S41,
    s41 S41 S42,
    s42 S42 S43,
    s43 S43 S44,
    s44 S44 S45,
    s45 S45 S46,
    s46 S46 S47,
    s47 S47 S48,
    s48 S48 S49,
    s49 S49 S50,
    s50 S50 S51,
    s51 S51 S52,
    s52 S52 S53,
    s53 S53 S54,
    s54 S54 S55,
    s55 S55 S56,
    s56 S56 S57,
    s57 S57 S58,
    s58 S58 S59,
    s59 S59 S60,
    s60 S60 S61,
    s61 S61 S62,
    s62 S62 S63,
    s63 S63 S64,
    s64 S64 S65,
    s65 S65 S66,
    s66 S66 S67,
    s67 S67 S68,
    s68 S68 S69,
    s69 S69 S70,
);

#[tokio::test]
async fn every_group_of_a_large_dispatch_reaches_its_step() {
    let executor = Executor::<Long, _>::new(Counter::default());
    let outcome = executor.run(Machine::new(S0(0))).await;
    assert!(outcome.is_success());
    assert_eq!(outcome.state, Long::S70(70));
    let steps: Vec<&str> = outcome
        .history
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StepSucceeded { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    let expected: Vec<&str> = Long::DEFINITION.states[..70]
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(steps, expected);
}

#[tokio::test]
async fn an_execution_resumed_in_a_late_group_finishes() {
    let executor = Executor::<Long, _>::new(Counter::default());
    let outcome = executor.run(Long::S66(66)).await;
    assert_eq!(outcome.state, Long::S70(70));
    assert_eq!(outcome.history.transitions().count(), 4);
}

#[tokio::test]
async fn a_retry_in_a_late_group_resumes_there() {
    let executor = Executor::<Long, _>::new(Counter {
        flaky: true,
        ..Counter::default()
    });
    let outcome = executor.run(Machine::new(S0(0))).await;
    assert_eq!(outcome.state, Long::S70(70));
    let events: Vec<(&str, &str)> = outcome
        .history
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::StepFailed { .. } | EventKind::RetryScheduled { .. }
            )
        })
        .map(|e| (e.kind.name(), e.kind.state()))
        .collect();
    assert_eq!(events, [("step failed", "S40"), ("retry scheduled", "S40")]);
    assert_eq!(outcome.history.transitions().count(), 70);
}
