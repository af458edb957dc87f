//! The executor at its edges, as a user meets them: a step that blocks its thread past its
//! time limit, a machine whose `Clone` panics, a history that would grow without bound, and
//! jitter across executors that number their executions alike.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fsm_core::{Context, EventKind, Executor, Fsm, History, Status, StepError};

/// Data whose `Clone` panics once `armed` says so: the kind of bug a user's `Clone` can have.
#[derive(Debug)]
pub struct Fragile {
    armed: Arc<AtomicBool>,
    copies: Arc<AtomicUsize>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        self.copies.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            panic!("this value cannot be copied");
        }
        Fragile {
            armed: Arc::clone(&self.armed),
            copies: Arc::clone(&self.copies),
        }
    }
}

impl PartialEq for Fragile {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Task {
    #[fsm(initial, on(work => Done), on(detour => Flaky | Flip), timeout_ms = 50, catch(_ => Failed))]
    Ready { n: u32, data: Fragile },
    #[fsm(on(finish => Done), retry(max_attempts = 99_999_999, interval_ms = 1))]
    Flaky { n: u32 },
    #[fsm(on(flip => Flop | Done))]
    Flip,
    #[fsm(on(flop => Flip))]
    Flop,
    #[fsm(terminal)]
    Done { n: u32 },
    #[fsm(terminal(failure))]
    Failed { why: String },
}

use task::*;

/// What the `Ready` step does: block its thread this long, then succeed or fail.
struct Worker {
    block_ms: u64,
    fail: bool,
    /// Set by the `Ready` step when it runs: the `Clone` of the state panics from then on.
    arm_on_step: bool,
}

impl Steps for Worker {
    async fn ready(&self, state: Machine<Ready>, _: Context) -> Result<ReadyNext, StepError> {
        std::thread::sleep(Duration::from_millis(self.block_ms));
        if self.arm_on_step {
            state.data.armed.store(true, Ordering::SeqCst);
        }
        if self.fail {
            return Err(StepError::fatal("broken", "the service refused"));
        }
        Ok(state.work(|r| Done { n: r.n }).into())
    }
    async fn flaky(&self, _: Machine<Flaky>, _: Context) -> Result<Machine<Done>, StepError> {
        Err(StepError::retryable("flaky", "try again"))
    }
    async fn flip(&self, state: Machine<Flip>, _: Context) -> Result<FlipNext, StepError> {
        Ok(state.flip(|_| Flop).into())
    }
    async fn flop(&self, state: Machine<Flop>, _: Context) -> Result<Machine<Flip>, StepError> {
        Ok(state.flop(|_| Flip))
    }
    fn catch_ready_to_failed(&self, _: Ready, error: &StepError) -> Failed {
        Failed {
            why: error.to_string(),
        }
    }
}

fn worker(block_ms: u64) -> Worker {
    Worker {
        block_ms,
        fail: false,
        arm_on_step: false,
    }
}

fn ready(n: u32) -> (Ready, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let armed = Arc::new(AtomicBool::new(false));
    let copies = Arc::new(AtomicUsize::new(0));
    let data = Fragile {
        armed: Arc::clone(&armed),
        copies: Arc::clone(&copies),
    };
    (Ready { n, data }, armed, copies)
}

fn kinds(history: &History) -> Vec<&'static str> {
    history.events().iter().map(|e| e.kind.name()).collect()
}

// Real time: the step blocks its thread, which tokio's paused clock would not see.
#[tokio::test]
async fn a_result_that_arrives_after_the_time_limit_is_a_timeout_and_is_discarded() {
    let executor = Executor::<Task, _>::new(worker(300));
    let (start, _, _) = ready(1);
    let outcome = executor.run(Machine::new(start)).await;

    // The step returned `Done` 300 ms in, past its 50 ms limit: the result does not count,
    // and the timeout goes where the declaration routes errors.
    assert_eq!(
        kinds(&outcome.history)[..3],
        ["execution started", "step started", "step timed out"]
    );
    assert!(outcome
        .history
        .transitions()
        .all(|t| Task::DEFINITION.transitions[t].catch));
    match &outcome.state {
        Task::Failed { why } => assert!(
            why.starts_with("timeout: attempt returned after its limit of 50ms"),
            "{why}"
        ),
        other => panic!("ended in {other:?}"),
    }
    // A step that returns within its limit still succeeds.
    let executor = Executor::<Task, _>::new(worker(5));
    let outcome = executor.run(Machine::new(ready(2).0)).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.state, Task::Done { n: 2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_clone_ends_its_execution_with_its_state_and_others_go_on() {
    let executor = Executor::<Task, _>::new(worker(0));
    let (start, armed, _) = ready(1);
    armed.store(true, Ordering::SeqCst);
    let broken = executor.spawn(Machine::new(start));
    let fine = executor.spawn(Machine::new(ready(2).0));

    let broken = broken
        .await
        .expect("the execution ends with an outcome, not a panic");
    match &broken.status {
        Status::Errored { attempts: 1, error } => {
            assert_eq!(error.kind(), StepError::PANIC);
            assert!(error.message().contains("`Clone` panicked"), "{error}");
            assert!(
                error.message().contains("this value cannot be copied"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The execution keeps the state it was in, and its step never ran.
    assert!(matches!(broken.state, Task::Ready { n: 1, .. }));
    assert_eq!(
        kinds(&broken.history),
        ["execution started", "execution failed"]
    );
    assert_eq!(fine.await.unwrap().state, Task::Done { n: 2 });
}

#[tokio::test]
async fn a_clone_that_panics_on_the_way_to_an_error_route_ends_the_execution_with_its_state() {
    // The first copy (before the step) succeeds; the step fails and arms the data, so the
    // copy made for the error route panics.
    let executor = Executor::<Task, _>::new(Worker {
        block_ms: 0,
        fail: true,
        arm_on_step: true,
    });
    let (start, _, copies) = ready(3);
    let outcome = executor.run(Machine::new(start)).await;
    match &outcome.status {
        Status::Errored { error, .. } => {
            assert_eq!(error.kind(), StepError::PANIC);
            assert!(error.message().contains("`Clone` panicked"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(outcome.state, Task::Ready { n: 3, .. }));
    assert_eq!(copies.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_always_failing_step_stops_at_the_history_limit() {
    let executor = Executor::<Task, _>::new(worker(0));
    let outcome = executor
        .run(Machine::<Flaky>::try_from(Task::Flaky { n: 1 }).unwrap())
        .await;

    let history = &outcome.history;
    assert_eq!(history.len(), History::DEFAULT_LIMIT + 1);
    match &outcome.status {
        Status::Errored { attempts, error } => {
            assert_eq!(error.kind(), StepError::HISTORY_LIMIT);
            assert!(!error.is_retryable());
            // Three events an attempt (started, failed, retry scheduled), after the start.
            assert_eq!(*attempts as usize, (History::DEFAULT_LIMIT - 1) / 3 + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.state, Task::Flaky { n: 1 });
    let last = &history.events()[history.len() - 1].kind;
    assert!(
        matches!(last, EventKind::ExecutionFailed { error: Some(e), .. } if e.kind() == StepError::HISTORY_LIMIT)
    );
}

#[tokio::test(start_paused = true)]
async fn a_machine_that_loops_stops_at_the_history_limit_it_was_given() {
    let executor = Executor::<Task, _>::builder(worker(0))
        .history_limit(100)
        .build();
    let start = Machine::<Flip>::try_from(Task::Flip).unwrap();
    let outcome = executor.run(start).await;
    assert_eq!(outcome.history.len(), 101);
    assert!(
        matches!(&outcome.status, Status::Errored { error, .. } if error.kind() == StepError::HISTORY_LIMIT)
    );
}

// Real time, on one thread: the loop's steps are always ready, and only its yielding lets the
// timer (and any other task) run.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_without_history_runs_until_stopped_and_lets_other_tasks_run() {
    // Without a history nothing grows, and the limit does not apply: the loop goes on until
    // something outside stops it, giving the thread back every so often.
    let executor = Executor::<Task, _>::builder(worker(0))
        .record_history(false)
        .history_limit(100)
        .build();
    let start = Machine::<Flip>::try_from(Task::Flip).unwrap();
    let other = tokio::spawn(async { 7 });
    let endless = tokio::time::timeout(Duration::from_millis(100), executor.run(start)).await;
    assert!(endless.is_err(), "the loop was stopped by the timeout");
    assert_eq!(other.await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn executors_that_number_their_executions_alike_still_spread_their_retries() {
    // Two executors stand for two processes: each runs its first execution, which retries
    // with full jitter.
    let mut firsts = Vec::new();
    for _ in 0..4 {
        let executor = Executor::<Task, _>::builder(worker(0))
            .retry(
                "Flaky",
                fsm_core::RetryPolicy {
                    max_attempts: 3,
                    interval: Duration::from_secs(10),
                    jitter: fsm_core::Jitter::Full,
                    ..fsm_core::RetryPolicy::ASL_DEFAULT
                },
            )
            .unwrap()
            .build();
        let outcome = executor
            .run(Machine::<Flaky>::try_from(Task::Flaky { n: 1 }).unwrap())
            .await;
        let delays: Vec<Duration> = outcome
            .history
            .events()
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::RetryScheduled { delay, .. } => Some(delay),
                _ => None,
            })
            .collect();
        assert_eq!(delays.len(), 3);
        firsts.push(delays);
    }
    firsts.sort();
    firsts.dedup();
    assert_eq!(
        firsts.len(),
        4,
        "each executor's first execution waits its own delays"
    );
}
