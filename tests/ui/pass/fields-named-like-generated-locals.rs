//! States whose fields are named like the locals of the generated step loop and error routes
//! (`steps`, `cx`, `error`, `state`, `next`, `driver`, `other`, `target`): the executor still
//! runs them, retries included, and routes their errors.
use fsm_core::{Context, Executor, Fsm, Status, StepError};

#[derive(Fsm, Debug, Clone, PartialEq)]
pub enum Job {
    #[fsm(initial, on(start => Running), retry(max_attempts = 1, interval_ms = 1), catch(_ => Failed))]
    Queued { steps: u32, cx: u32, error: u32, state: u32 },
    #[fsm(on(finish => Done), catch(_ => Failed))]
    Running { next: u32, driver: u32, other: u32, target: u32 },
    #[fsm(terminal)]
    Done { steps: u32 },
    #[fsm(terminal(failure))]
    Failed { error: String },
}

struct Worker;

impl job::Steps for Worker {
    async fn queued(&self, q: job::Machine<job::Queued>, cx: Context) -> Result<job::Machine<job::Running>, StepError> {
        if cx.attempt == 1 {
            return Err(StepError::retryable("busy", "try again"));
        }
        Ok(q.start(|q| job::Running { next: q.steps, driver: q.cx, other: q.error, target: q.state }))
    }
    async fn running(&self, r: job::Machine<job::Running>, _: Context) -> Result<job::Machine<job::Done>, StepError> {
        if r.target == 0 {
            return Err(StepError::fatal("broken", "no target"));
        }
        Ok(r.finish(|r| job::Done { steps: r.next + r.driver + r.other + r.target }))
    }
    fn catch_queued_to_failed(&self, q: job::Queued, error: &StepError) -> job::Failed {
        job::Failed { error: format!("{} after {} steps: {error}", q.state, q.steps) }
    }
    fn catch_running_to_failed(&self, r: job::Running, error: &StepError) -> job::Failed {
        job::Failed { error: format!("{} at {}: {error}", r.driver, r.target) }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let executor = Executor::<Job, _>::new(Worker);
    let done = executor.run(job::Machine::new(job::Queued { steps: 1, cx: 2, error: 3, state: 4 })).await;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.state, Job::Done { steps: 10 });
    let failed = executor.run(job::Machine::new(job::Queued { steps: 1, cx: 2, error: 3, state: 0 })).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.state, Job::Failed { error: "2 at 0: broken: no target (not retryable)".into() });
}
