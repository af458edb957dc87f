//! The executor's cost per step, against a hand-written async loop over the same handlers.
//!
//! A chain of 20 steps; each handler adds one to a `u64` and is ready at once. Runs are
//! polled with a no-op waker (nothing ever waits), so the figures are the machinery alone:
//!
//! - `hand_loop_over_steps`: what a user writes without the executor: a loop over `AnyState`
//!   awaiting the same `Steps` handlers the executor awaits, each step with its own `Context`
//!   (attempt 1, the step's idempotency key), stopping at the first error; the `_opaque`
//!   variant puts the state through `black_box` after every step (what steps separated by
//!   real I/O look like), the plain one lets the optimiser fold the whole chain;
//! - `hand_loop`, `hand_loop_opaque`: the same shape without `Steps`:
//!   `loop { state = match state { S0(x) => S1(bump(x).await), .. } }`;
//! - `executor_history`: `Executor::run`, recording the history (three events per step);
//! - `executor_no_history`: the same with `record_history(false)`;
//!   `executor_no_history_metrics` with `.metrics()` too, into Prometheus' recorder;
//!   `executor_no_history_0_steps` starts in the terminal state: what an execution costs
//!   besides its steps.
//!
//! Each executor run's outcome (its history too) is dropped inside the measured time, as it
//! is in a program that reads it and moves on.
//!
//! `checkout_10k` runs 10,000 concurrent checkouts of `examples/checkout.rs` (no simulated
//! latency) on a two-worker tokio runtime and reports steps per second.
//!
//! `cargo bench --bench executor`; divide a run's time by 20 for the time per step.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context as Waker, Poll};

use fsm_core::{Context, EventKind, ExecutionId, Executor, Fsm, StepError};

#[allow(dead_code)]
#[path = "../examples/checkout.rs"]
mod example;

const STEPS: u64 = 20;

#[derive(Fsm, Clone)]
pub enum Chain {
    #[fsm(initial, on(t0 => S1))]
    S0(u64),
    #[fsm(on(t1 => S2))]
    S1(u64),
    #[fsm(on(t2 => S3))]
    S2(u64),
    #[fsm(on(t3 => S4))]
    S3(u64),
    #[fsm(on(t4 => S5))]
    S4(u64),
    #[fsm(on(t5 => S6))]
    S5(u64),
    #[fsm(on(t6 => S7))]
    S6(u64),
    #[fsm(on(t7 => S8))]
    S7(u64),
    #[fsm(on(t8 => S9))]
    S8(u64),
    #[fsm(on(t9 => S10))]
    S9(u64),
    #[fsm(on(t10 => S11))]
    S10(u64),
    #[fsm(on(t11 => S12))]
    S11(u64),
    #[fsm(on(t12 => S13))]
    S12(u64),
    #[fsm(on(t13 => S14))]
    S13(u64),
    #[fsm(on(t14 => S15))]
    S14(u64),
    #[fsm(on(t15 => S16))]
    S15(u64),
    #[fsm(on(t16 => S17))]
    S16(u64),
    #[fsm(on(t17 => S18))]
    S17(u64),
    #[fsm(on(t18 => S19))]
    S18(u64),
    #[fsm(on(t19 => S20))]
    S19(u64),
    #[fsm(terminal)]
    S20(u64),
}

use chain::*;

/// The handler every step awaits.
async fn bump(x: u64) -> u64 {
    x.wrapping_add(1)
}

struct Bump;

impl Steps for Bump {
    async fn s0(&self, m: Machine<S0>, _: Context) -> Result<Machine<S1>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t0(|_| S1(x)))
    }
    async fn s1(&self, m: Machine<S1>, _: Context) -> Result<Machine<S2>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t1(|_| S2(x)))
    }
    async fn s2(&self, m: Machine<S2>, _: Context) -> Result<Machine<S3>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t2(|_| S3(x)))
    }
    async fn s3(&self, m: Machine<S3>, _: Context) -> Result<Machine<S4>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t3(|_| S4(x)))
    }
    async fn s4(&self, m: Machine<S4>, _: Context) -> Result<Machine<S5>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t4(|_| S5(x)))
    }
    async fn s5(&self, m: Machine<S5>, _: Context) -> Result<Machine<S6>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t5(|_| S6(x)))
    }
    async fn s6(&self, m: Machine<S6>, _: Context) -> Result<Machine<S7>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t6(|_| S7(x)))
    }
    async fn s7(&self, m: Machine<S7>, _: Context) -> Result<Machine<S8>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t7(|_| S8(x)))
    }
    async fn s8(&self, m: Machine<S8>, _: Context) -> Result<Machine<S9>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t8(|_| S9(x)))
    }
    async fn s9(&self, m: Machine<S9>, _: Context) -> Result<Machine<S10>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t9(|_| S10(x)))
    }
    async fn s10(&self, m: Machine<S10>, _: Context) -> Result<Machine<S11>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t10(|_| S11(x)))
    }
    async fn s11(&self, m: Machine<S11>, _: Context) -> Result<Machine<S12>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t11(|_| S12(x)))
    }
    async fn s12(&self, m: Machine<S12>, _: Context) -> Result<Machine<S13>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t12(|_| S13(x)))
    }
    async fn s13(&self, m: Machine<S13>, _: Context) -> Result<Machine<S14>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t13(|_| S14(x)))
    }
    async fn s14(&self, m: Machine<S14>, _: Context) -> Result<Machine<S15>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t14(|_| S15(x)))
    }
    async fn s15(&self, m: Machine<S15>, _: Context) -> Result<Machine<S16>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t15(|_| S16(x)))
    }
    async fn s16(&self, m: Machine<S16>, _: Context) -> Result<Machine<S17>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t16(|_| S17(x)))
    }
    async fn s17(&self, m: Machine<S17>, _: Context) -> Result<Machine<S18>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t17(|_| S18(x)))
    }
    async fn s18(&self, m: Machine<S18>, _: Context) -> Result<Machine<S19>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t18(|_| S19(x)))
    }
    async fn s19(&self, m: Machine<S19>, _: Context) -> Result<Machine<S20>, StepError> {
        let x = bump(m.0).await;
        Ok(m.t19(|_| S20(x)))
    }
}

async fn hand_loop(state: Chain) -> Chain {
    hand_loop_with(state, |s| s).await
}

/// The hand loop with `barrier` applied to the state after every step: `black_box` makes each
/// state real, as steps separated by I/O are, instead of letting the optimiser fold the chain.
async fn hand_loop_with(mut state: Chain, barrier: impl Fn(Chain) -> Chain) -> Chain {
    loop {
        state = barrier(match state {
            Chain::S0(x) => Chain::S1(bump(x).await),
            Chain::S1(x) => Chain::S2(bump(x).await),
            Chain::S2(x) => Chain::S3(bump(x).await),
            Chain::S3(x) => Chain::S4(bump(x).await),
            Chain::S4(x) => Chain::S5(bump(x).await),
            Chain::S5(x) => Chain::S6(bump(x).await),
            Chain::S6(x) => Chain::S7(bump(x).await),
            Chain::S7(x) => Chain::S8(bump(x).await),
            Chain::S8(x) => Chain::S9(bump(x).await),
            Chain::S9(x) => Chain::S10(bump(x).await),
            Chain::S10(x) => Chain::S11(bump(x).await),
            Chain::S11(x) => Chain::S12(bump(x).await),
            Chain::S12(x) => Chain::S13(bump(x).await),
            Chain::S13(x) => Chain::S14(bump(x).await),
            Chain::S14(x) => Chain::S15(bump(x).await),
            Chain::S15(x) => Chain::S16(bump(x).await),
            Chain::S16(x) => Chain::S17(bump(x).await),
            Chain::S17(x) => Chain::S18(bump(x).await),
            Chain::S18(x) => Chain::S19(bump(x).await),
            Chain::S19(x) => Chain::S20(bump(x).await),
            done @ Chain::S20(_) => return done,
        });
    }
}

/// The hand loop a user of this crate would write without the executor: the same `Steps`
/// handlers, called on the typed states that `AnyState` gives back, each step with its own
/// context (attempt 1, the step's idempotency key), stopping at the first error.
async fn hand_loop_steps(
    mut state: Chain,
    steps: &Bump,
    execution: ExecutionId,
    barrier: impl Fn(Chain) -> Chain,
) -> Result<Chain, StepError> {
    let mut step = 0;
    loop {
        let cx = Context {
            execution,
            attempt: 1,
            step,
        };
        step += 1;
        state = barrier(match AnyState::from(state) {
            AnyState::S0(m) => match steps.s0(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S1(m) => match steps.s1(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S2(m) => match steps.s2(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S3(m) => match steps.s3(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S4(m) => match steps.s4(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S5(m) => match steps.s5(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S6(m) => match steps.s6(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S7(m) => match steps.s7(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S8(m) => match steps.s8(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S9(m) => match steps.s9(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S10(m) => match steps.s10(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S11(m) => match steps.s11(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S12(m) => match steps.s12(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S13(m) => match steps.s13(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S14(m) => match steps.s14(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S15(m) => match steps.s15(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S16(m) => match steps.s16(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S17(m) => match steps.s17(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S18(m) => match steps.s18(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S19(m) => match steps.s19(m, cx).await {
                Ok(next) => next.into(),
                Err(error) => return Err(error),
            },
            AnyState::S20(m) => return Ok(m.into()),
        });
    }
}

/// Polls a future that never waits.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Waker::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("every handler is ready at once"),
    }
}

#[divan::bench]
fn hand_loop_20_steps() -> Chain {
    ready(hand_loop(black_box(Chain::S0(1))))
}

#[divan::bench]
fn hand_loop_opaque_20_steps() -> Chain {
    ready(hand_loop_with(black_box(Chain::S0(1)), black_box))
}

#[divan::bench]
fn hand_loop_over_steps_20_steps() -> Result<Chain, StepError> {
    ready(hand_loop_steps(
        black_box(Chain::S0(1)),
        &Bump,
        ExecutionId::from_u128(1),
        |s| s,
    ))
}

#[divan::bench]
fn hand_loop_over_steps_opaque_20_steps() -> Result<Chain, StepError> {
    ready(hand_loop_steps(
        black_box(Chain::S0(1)),
        &Bump,
        ExecutionId::from_u128(1),
        black_box,
    ))
}

#[divan::bench]
fn executor_history_20_steps(bencher: divan::Bencher) {
    run_executor(bencher, true, Chain::S0(1));
}

#[divan::bench]
fn executor_no_history_20_steps(bencher: divan::Bencher) {
    run_executor(bencher, false, Chain::S0(1));
}

#[divan::bench]
fn executor_no_history_0_steps(bencher: divan::Bencher) {
    run_executor(bencher, false, Chain::S20(1));
}

/// History off, metrics on (`ExecutorBuilder::metrics`), into Prometheus' recorder: what a
/// step costs when its events are counted and timed.
#[divan::bench]
fn executor_no_history_metrics_20_steps(bencher: divan::Bencher) {
    static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    RECORDER.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    });
    let executor = Executor::<Chain, _>::builder(Bump)
        .record_history(false)
        .metrics()
        .build();
    let start = Chain::S0(1);
    bencher.bench_local(|| black_box(ready(executor.run(black_box(start.clone()))).state));
}

/// Runs executions from `start`, dropping each outcome (and its history) inside the
/// measured time.
fn run_executor(bencher: divan::Bencher, record_history: bool, start: Chain) {
    let executor = Executor::<Chain, _>::builder(Bump)
        .record_history(record_history)
        .build();
    bencher.bench_local(|| black_box(ready(executor.run(black_box(start.clone()))).state));
}

/// 10,000 orders with the example's mix: out of stock, declined, gift, plain.
fn checkout_orders() -> (example::Services, Vec<example::Checkout>) {
    let services = example::Services {
        stock: Mutex::new(HashMap::from([
            ("mug".into(), 1_000_000),
            ("kettle".into(), 0),
        ])),
        declined: (0..10_000).filter(|o| o % 10 == 1).collect(),
        ..example::Services::default()
    };
    let orders = (0..10_000)
        .map(|order| {
            let items = if order % 10 == 0 {
                vec!["kettle".into()].into()
            } else {
                vec!["mug".into()].into()
            };
            example::Checkout::Submitted {
                order,
                items,
                gift: order % 10 == 4,
                signature: false,
            }
        })
        .collect();
    (services, orders)
}

#[divan::bench(sample_count = 10)]
fn checkout_10k(bencher: divan::Bencher) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (services, orders) = checkout_orders();
    let executor = Executor::<example::Checkout, _>::new(services);
    let run = |orders: Vec<example::Checkout>| {
        runtime.block_on(async {
            let handles: Vec<_> = orders.into_iter().map(|o| executor.spawn(o)).collect();
            let mut steps = 0;
            for handle in handles {
                let outcome = handle.await.unwrap();
                steps += outcome
                    .history
                    .events()
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::StepStarted { .. }))
                    .count();
            }
            steps
        })
    };
    let steps = run(orders.clone());
    bencher
        .counter(divan::counter::ItemsCount::new(steps))
        .with_inputs(|| orders.clone())
        .bench_local_values(run);
}

fn main() {
    // Both drivers agree before anything is measured.
    let executor = Executor::<Chain, _>::new(Bump);
    let outcome = ready(executor.run(Chain::S0(1)));
    assert!(
        matches!((ready(hand_loop(Chain::S0(1))), outcome.state), (Chain::S20(a), Chain::S20(b)) if a == b && a == 1 + STEPS)
    );
    divan::main();
}
