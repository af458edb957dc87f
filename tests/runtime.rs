//! The executor as a user meets it: retries and backoff, jitter, timeouts, error routing,
//! panics, history and observers. Time is tokio's paused clock: nothing really sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{
    Context, EventKind, Executor, Fsm, Jitter, RetryPolicy, Status, StepError, UnknownState,
};
use tokio::time::Instant;

#[derive(Fsm, Debug, Clone, PartialEq)]
#[fsm(derive(Debug, Clone, PartialEq))]
pub enum Job {
    #[fsm(
        initial,
        on(run => Done | Rejected),
        retry(max_attempts = 3, interval_ms = 100, backoff_rate = 2.0, max_delay_ms = 300),
        timeout_ms = 50,
        catch(broken => Quarantined)
    )]
    Queued { id: u32 },
    #[fsm(on(release => Rejected))]
    Quarantined { id: u32, why: String },
    #[fsm(terminal)]
    Done { id: u32 },
    #[fsm(terminal(failure))]
    Rejected { id: u32 },
}

use job::*;

/// What one attempt of a job's step does.
#[derive(Clone)]
enum Act {
    Finish,
    Reject,
    Fail(&'static str, bool),
    Sleep(u64),
    Panic,
}

/// Steps that follow a script per job id, and remember every context they were given.
#[derive(Default)]
struct Worker {
    scripts: Mutex<HashMap<u32, Vec<Act>>>,
    seen: Mutex<Vec<Context>>,
}

impl Worker {
    fn with(scripts: impl IntoIterator<Item = (u32, Vec<Act>)>) -> Self {
        Worker {
            scripts: Mutex::new(scripts.into_iter().collect()),
            seen: Mutex::default(),
        }
    }
}

impl Steps for Worker {
    async fn queued(&self, job: Machine<Queued>, cx: Context) -> Result<QueuedNext, StepError> {
        self.seen.lock().unwrap().push(cx);
        let act = {
            let mut scripts = self.scripts.lock().unwrap();
            let script = scripts.entry(job.id).or_default();
            if script.is_empty() {
                Act::Finish
            } else {
                script.remove(0)
            }
        };
        match act {
            Act::Finish => Ok(job.run(|q| Done { id: q.id }).into()),
            Act::Reject => Ok(job.run(|q| Rejected { id: q.id }).into()),
            Act::Fail(kind, true) => Err(StepError::retryable(kind, "scripted failure")),
            Act::Fail(kind, false) => Err(StepError::fatal(kind, "scripted failure")),
            Act::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(job.run(|q| Done { id: q.id }).into())
            }
            Act::Panic => panic!("worker crashed on job {}", job.id),
        }
    }

    async fn quarantined(
        &self,
        job: Machine<Quarantined>,
        _: Context,
    ) -> Result<Machine<Rejected>, StepError> {
        Ok(job.release(|q| Rejected { id: q.id }))
    }

    fn catch_queued_to_quarantined(&self, failed: Queued, error: &StepError) -> Quarantined {
        if failed.id == 13 {
            panic!("the quarantine is full");
        }
        Quarantined {
            id: failed.id,
            why: error.to_string(),
        }
    }
}

fn start(id: u32) -> Machine<Queued> {
    Machine::new(Queued { id })
}

fn retry_delays(history: &fsm_core::History) -> Vec<Duration> {
    history
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RetryScheduled { delay, .. } => Some(delay),
            _ => None,
        })
        .collect()
}

/// Every attempt that ran past its limit: state, attempt, limit, and when it was abandoned.
fn timeouts(history: &fsm_core::History) -> Vec<(&'static str, u32, Duration, Duration)> {
    history
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StepTimedOut {
                state,
                attempt,
                timeout,
            } => Some((state, attempt, timeout, e.at)),
            _ => None,
        })
        .collect()
}

fn names(history: &fsm_core::History) -> Vec<&'static str> {
    history.events().iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_by_the_declared_policy_with_one_idempotency_key() {
    let executor = Executor::<Job, _>::new(Worker::with([(
        1,
        vec![Act::Fail("flaky", true), Act::Fail("flaky", true)],
    )]));
    let began = Instant::now();
    let outcome = executor.run(start(1)).await;

    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.state, Job::Done { id: 1 });
    assert_eq!(
        retry_delays(&outcome.history),
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
    assert_eq!(began.elapsed(), Duration::from_millis(300));
    let seen = executor.steps().seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|cx| cx.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(seen
        .iter()
        .all(|cx| cx.idempotency_key() == seen[0].idempotency_key()));
    assert_eq!(
        seen[0].idempotency_key().to_string(),
        format!("{}-step-0", outcome.id)
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_attempts_and_delays_stop_at_the_cap() {
    let executor = Executor::<Job, _>::new(Worker::with([(2, vec![Act::Fail("flaky", true); 10])]));
    let outcome = executor.run(start(2)).await;

    let ms = |n| Duration::from_millis(n);
    assert_eq!(retry_delays(&outcome.history), [ms(100), ms(200), ms(300)]);
    match &outcome.status {
        Status::Errored { attempts, error } => {
            assert_eq!(*attempts, 4);
            assert_eq!(error.kind(), "flaky");
        }
        other => panic!("expected the step to fail for good, got {other:?}"),
    }
    // The execution stops in the state whose step failed, with that recorded last.
    assert_eq!(outcome.state, Job::Queued { id: 2 });
    match &outcome.history.events().last().unwrap().kind {
        EventKind::ExecutionFailed {
            state,
            attempts,
            error,
        } => {
            assert_eq!((*state, *attempts), ("Queued", 4));
            assert_eq!(error.as_ref().map(|e| e.kind()), Some("flaky"));
        }
        other => panic!("history ends with {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_is_not_retried() {
    let executor = Executor::<Job, _>::new(Worker::with([(3, vec![Act::Fail("invalid", false)])]));
    let outcome = executor.run(start(3)).await;

    assert!(matches!(
        outcome.status,
        Status::Errored { attempts: 1, .. }
    ));
    assert_eq!(
        names(&outcome.history),
        [
            "execution started",
            "step started",
            "step failed",
            "execution failed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_abandoned_and_retried() {
    let executor = Executor::<Job, _>::new(Worker::with([(4, vec![Act::Sleep(1_000)])]));
    let outcome = executor.run(start(4)).await;

    assert_eq!(outcome.status, Status::Succeeded);
    let timed_out: Vec<_> = timeouts(&outcome.history)
        .into_iter()
        .map(|(_, attempt, timeout, _)| (attempt, timeout))
        .collect();
    assert_eq!(timed_out, [(1, Duration::from_millis(50))]);
    // The abandoned attempt did not get to finish the job: the second attempt did.
    assert_eq!(
        outcome.history.events().last().unwrap().at,
        Duration::from_millis(150)
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_fails_for_good_is_routed_by_its_error_kind() {
    let executor = Executor::<Job, _>::new(Worker::with([(5, vec![Act::Fail("broken", false)])]));
    let outcome = executor.run(start(5)).await;

    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(outcome.state, Job::Rejected { id: 5 });
    let transitions: Vec<_> = outcome
        .history
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Transition {
                from, event, to, ..
            } => Some((*from, *event, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        [
            ("Queued", "broken", "Quarantined"),
            ("Quarantined", "release", "Rejected")
        ]
    );
    let t = &Job::DEFINITION.transitions[outcome.history.transitions().next().unwrap()];
    assert!(t.catch);
}

#[tokio::test(start_paused = true)]
async fn an_error_with_no_route_ends_the_execution_failed() {
    let executor =
        Executor::<Job, _>::new(Worker::with([(6, vec![Act::Fail("unplanned", false)])]));
    let outcome = executor.run(start(6)).await;
    assert!(
        matches!(&outcome.status, Status::Errored { error, .. } if error.kind() == "unplanned")
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_is_a_failed_attempt_and_other_executions_keep_running() {
    let executor = Executor::<Job, _>::new(Worker::with([
        (7, vec![Act::Panic]),
        (8, vec![Act::Sleep(10)]),
    ]));
    let crashed = executor.spawn(start(7));
    let healthy = executor.spawn(start(8));
    let crashed = crashed.await.expect("the executor caught the panic");
    let healthy = healthy.await.unwrap();

    match &crashed.status {
        Status::Errored { attempts: 1, error } => {
            assert_eq!(error.kind(), StepError::PANIC);
            assert!(
                error.message().contains("worker crashed on job 7"),
                "{error}"
            );
        }
        other => panic!("expected a failed attempt, got {other:?}"),
    }
    assert!(names(&crashed.history).contains(&"step failed"));
    assert_eq!(healthy.status, Status::Succeeded);
    // The executor is still usable.
    assert_eq!(executor.run(start(9)).await.status, Status::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_keeps_every_delay_between_zero_and_the_backoff() {
    let policy = RetryPolicy {
        max_attempts: 30,
        interval: Duration::from_millis(100),
        backoff_rate: 1.5,
        max_delay: Some(Duration::from_secs(2)),
        jitter: Jitter::Full,
    };
    let worker = Worker::with([(10, vec![Act::Fail("flaky", true); 30])]);
    let executor = Executor::<Job, _>::builder(worker)
        .retry("Queued", policy)
        .unwrap()
        .build();
    let outcome = executor.run(start(10)).await;

    let delays = retry_delays(&outcome.history);
    assert_eq!(delays.len(), 30);
    for (n, delay) in delays.iter().enumerate() {
        assert!(
            *delay <= policy.backoff(n as u32 + 1),
            "retry {} waited {delay:?}",
            n + 1
        );
    }
    let unjittered = delays
        .iter()
        .enumerate()
        .filter(|(n, d)| **d == policy.backoff(*n as u32 + 1))
        .count();
    assert!(unjittered < 3, "jitter changed the delays");
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_event_as_it_happens() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let executor =
        Executor::<Job, _>::builder(Worker::with([(11, vec![Act::Fail("flaky", true)])]))
            .observer(move |id, event| sink.lock().unwrap().push((id, event.clone())))
            .build();
    let outcome = executor.run(start(11)).await;

    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|(id, _)| *id == outcome.id));
    let observed: Vec<_> = seen.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(observed, outcome.history.events());
}

#[tokio::test(start_paused = true)]
async fn history_recording_can_be_switched_off_while_observers_still_see_everything() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let executor =
        Executor::<Job, _>::builder(Worker::with([(12, vec![Act::Fail("flaky", true)])]))
            .record_history(false)
            .observer(move |_, event| sink.lock().unwrap().push(event.kind.name()))
            .build();
    let outcome = executor.run(start(12)).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert!(outcome.history.is_empty());
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "execution started",
            "step started",
            "step failed",
            "retry scheduled",
            "step started",
            "step succeeded",
            "transition",
            "execution succeeded"
        ]
    );
}

#[test]
fn the_builder_rejects_a_state_the_machine_does_not_have() {
    let result = Executor::<Job, _>::builder(Worker::default()).timeout("Sleeping", None);
    let err: UnknownState = result.err().expect("no such state");
    assert_eq!(err.to_string(), "machine `Job` has no state `Sleeping`");
}

#[test]
fn the_declared_policies_are_in_the_definition() {
    let queued = &Job::DEFINITION.states[0];
    assert_eq!(queued.timeout, Some(Duration::from_millis(50)));
    let retry = queued.retry.expect("declared");
    assert_eq!(
        (retry.max_attempts, retry.interval, retry.backoff_rate),
        (3, Duration::from_millis(100), 2.0)
    );
    assert_eq!(retry.max_delay, Some(Duration::from_millis(300)));
    assert_eq!(retry.jitter, Jitter::None);
    assert_eq!(Job::DEFINITION.states[1].retry, None);
}

/// SplitMix64, to draw scripts.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(start_paused = true)]
async fn every_transition_in_every_history_is_in_the_definition() {
    let acts = [
        Act::Finish,
        Act::Reject,
        Act::Fail("flaky", true),
        Act::Fail("broken", false),
        Act::Fail("broken", true),
        Act::Fail("unplanned", false),
        Act::Sleep(80),
        Act::Sleep(5),
    ];
    let mut seed = 42;
    let scripts: Vec<(u32, Vec<Act>)> = (0..2_000)
        .map(|id| {
            let len = next(&mut seed) % 5;
            (
                id,
                (0..len)
                    .map(|_| acts[(next(&mut seed) % acts.len() as u64) as usize].clone())
                    .collect(),
            )
        })
        .collect();
    let executor = Executor::<Job, _>::new(Worker::with(scripts));
    let handles: Vec<_> = (0..2_000).map(|id| executor.spawn(start(id))).collect();

    let def = Job::DEFINITION;
    let mut ends = HashMap::new();
    for handle in handles {
        let outcome = handle.await.unwrap();
        let mut at = def.initial;
        for index in outcome.history.transitions() {
            let t = def
                .transitions
                .get(index)
                .expect("a transition of the definition");
            assert_eq!(t.from, at, "transitions chain from the initial state");
            at = t.to;
        }
        assert_eq!(
            at,
            outcome.state.state_index(),
            "the last transition leads to the final state"
        );
        *ends.entry(outcome.state.state_name()).or_insert(0) += 1;
    }
    // The scripts reach every way an execution can end.
    assert_eq!(ends.len(), 3, "{ends:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_error_route_fails_only_its_execution() {
    let executor = Executor::<Job, _>::new(Worker::with([(13, vec![Act::Fail("broken", false)])]));
    let outcome = executor.run(start(13)).await;
    match &outcome.status {
        Status::Errored { error, .. } => {
            assert_eq!(error.kind(), StepError::PANIC);
            assert!(
                error.message().contains("the quarantine is full"),
                "{error}"
            );
        }
        other => panic!("expected the route to fail, got {other:?}"),
    }
    assert_eq!(outcome.state, Job::Queued { id: 13 });
    assert_eq!(executor.run(start(14)).await.status, Status::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn an_execution_started_in_a_terminal_state_ends_at_once() {
    let executor = Executor::<Job, _>::new(Worker::default());
    let outcome = executor.run(Job::Rejected { id: 15 }).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        names(&outcome.history),
        ["execution started", "execution failed"]
    );
    assert!(
        executor.steps().seen.lock().unwrap().is_empty(),
        "no step ran"
    );
}

/// Three steps in a row, each sleeping as long as its data says: only the first and the last
/// have a time limit, so a limit must follow the step it belongs to.
#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Relay {
    #[fsm(initial, on(pass => Second), timeout_ms = 50)]
    First { ms: [u64; 3] },
    #[fsm(on(pass => Third))]
    Second { ms: [u64; 3] },
    #[fsm(on(pass => Finished), timeout_ms = 100)]
    Third { ms: [u64; 3] },
    #[fsm(terminal)]
    Finished,
}

struct Runner;

async fn nap(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl relay::Steps for Runner {
    async fn first(
        &self,
        s: relay::Machine<relay::First>,
        _: Context,
    ) -> Result<relay::Machine<relay::Second>, StepError> {
        nap(s.ms[0]).await;
        Ok(s.pass(|f| relay::Second { ms: f.ms }))
    }
    async fn second(
        &self,
        s: relay::Machine<relay::Second>,
        _: Context,
    ) -> Result<relay::Machine<relay::Third>, StepError> {
        nap(s.ms[1]).await;
        Ok(s.pass(|f| relay::Third { ms: f.ms }))
    }
    async fn third(
        &self,
        s: relay::Machine<relay::Third>,
        _: Context,
    ) -> Result<relay::Machine<relay::Finished>, StepError> {
        nap(s.ms[2]).await;
        Ok(s.pass(|_| relay::Finished))
    }
}

#[tokio::test(start_paused = true)]
async fn a_time_limit_applies_to_its_own_step_only() {
    for record in [true, false] {
        let executor = Executor::<Relay, _>::builder(Runner)
            .record_history(record)
            .build();
        // The first step ends within its limit; the second has none and takes far longer
        // than either limit; the third ends within its own.
        let began = Instant::now();
        let outcome = executor
            .run(relay::Machine::new(relay::First { ms: [40, 500, 90] }))
            .await;
        assert_eq!(outcome.status, Status::Succeeded, "history {record}");
        assert_eq!(began.elapsed(), Duration::from_millis(630));
        if record {
            assert!(timeouts(&outcome.history).is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_time_limit_counts_from_its_own_steps_start() {
    let executor = Executor::<Relay, _>::new(Runner);
    // The third step's 100 ms start when it does, 530 ms into the execution; it never
    // finishes, so it fails at 630 ms, after no retries (none are declared).
    let outcome = executor
        .run(relay::Machine::new(relay::First {
            ms: [30, 500, 10_000],
        }))
        .await;
    match &outcome.status {
        Status::Errored { attempts, error } => {
            assert_eq!((*attempts, error.kind()), (1, StepError::TIMEOUT));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        timeouts(&outcome.history),
        [(
            "Third",
            1,
            Duration::from_millis(100),
            Duration::from_millis(630)
        )]
    );
    assert_eq!(
        outcome.state,
        Relay::Third {
            ms: [30, 500, 10_000]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_observer_unwinds_out_of_its_execution_only() {
    let executor = Executor::<Job, _>::builder(Worker::default())
        .observer(|_, event| {
            if let EventKind::StepSucceeded { .. } = event.kind {
                panic!("the metrics sink is gone");
            }
        })
        .build();
    let observed = executor.spawn(start(16)).await;
    let panic = observed.expect_err("the observer's panic is not a step's failure");
    assert!(panic.is_panic());
    assert!(
        executor.steps().seen.lock().unwrap().len() == 1,
        "the step ran once and was not retried"
    );

    // The executor itself is unharmed.
    let quiet = Executor::<Job, _>::new(Worker::default());
    assert_eq!(quiet.run(start(17)).await.status, Status::Succeeded);
    assert_eq!(
        executor.spawn(Job::Done { id: 18 }).await.unwrap().status,
        Status::Succeeded
    );
}
