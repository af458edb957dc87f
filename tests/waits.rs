//! Waiting states on the in-memory executor: a step hands out a task token, and the
//! execution goes on when the token is completed, failed, or its wait times out.

use std::sync::Mutex;

use fsm_core::{Context, EventKind, Executor, Fsm, Status, StepError, TokenError};
use tokio::sync::mpsc;

#[derive(Fsm, Debug, Clone, PartialEq)]
enum Parcel {
    #[fsm(initial, on(ship => Shipped))]
    Packed { id: u32 },
    #[fsm(
        wait(timeout_ms = 1_000),
        on(deliver => Delivered | Lost),
        retry(max_attempts = 1, interval_ms = 10),
        catch(timeout => Lost)
    )]
    Shipped { id: u32 },
    #[fsm(terminal)]
    Delivered { id: u32 },
    #[fsm(terminal(failure))]
    Lost { id: u32 },
}

/// Hands every token to the test, as a carrier's webhook would receive it.
struct Carrier {
    tokens: mpsc::UnboundedSender<String>,
    /// Whether the step answers its own token before it returns (a carrier that answers at
    /// once).
    answer_at_once: Mutex<Option<Executor<Parcel, Carrier>>>,
}

impl parcel::Steps for Carrier {
    async fn packed(
        &self,
        p: parcel::Machine<parcel::Packed>,
        _: Context,
    ) -> Result<parcel::Machine<parcel::Shipped>, StepError> {
        Ok(p.ship(|s| parcel::Shipped { id: s.id }))
    }

    async fn shipped(
        &self,
        _: parcel::Machine<parcel::Shipped>,
        cx: Context,
        token: fsm_core::TaskToken,
    ) -> Result<(), StepError> {
        assert_eq!(token.execution(), cx.execution);
        let at_once = self.answer_at_once.lock().unwrap().clone();
        if let Some(executor) = at_once {
            executor
                .complete::<parcel::Shipped, _>(&token.to_string(), |p| {
                    p.deliver(|s| parcel::Delivered { id: s.id })
                })
                .unwrap();
        }
        self.tokens.send(token.to_string()).unwrap();
        Ok(())
    }

    fn catch_shipped_to_lost(&self, failed: parcel::Shipped, _: &StepError) -> parcel::Lost {
        parcel::Lost { id: failed.id }
    }
}

fn executor() -> (Executor<Parcel, Carrier>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let carrier = Carrier {
        tokens: tx,
        answer_at_once: Mutex::new(None),
    };
    (Executor::new(carrier), rx)
}

fn kinds(history: &fsm_core::History) -> Vec<&'static str> {
    history.events().iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_completed_token_takes_the_execution_to_the_state_the_completion_chose() {
    let (executor, mut tokens) = executor();
    let run = executor.spawn(parcel::Machine::new(parcel::Packed { id: 7 }));
    let token = tokens.recv().await.unwrap();
    let id = executor
        .complete::<parcel::Shipped, _>(&token, |p| p.deliver(|s| parcel::Delivered { id: s.id }))
        .unwrap();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.id, id);
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.state, Parcel::Delivered { id: 7 });
    assert!(kinds(&outcome.history).contains(&"wait completed"));
    // The token was used: a second answer is refused.
    let again = executor
        .complete::<parcel::Shipped, _>(&token, |p| p.deliver(|s| parcel::Lost { id: s.id }));
    assert_eq!(
        again,
        Err(TokenError::Forged),
        "the execution ended: its tokens are gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_answered_before_its_step_returns_is_not_lost() {
    let (executor, mut tokens) = executor();
    *executor.steps().answer_at_once.lock().unwrap() = Some(executor.clone());
    let outcome = executor
        .run(parcel::Machine::new(parcel::Packed { id: 1 }))
        .await;
    assert_eq!(outcome.state, Parcel::Delivered { id: 1 });
    // The executor is kept alive by the carrier: break the cycle.
    *executor.steps().answer_at_once.lock().unwrap() = None;
    assert!(tokens.recv().await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_failed_token_is_retried_with_a_new_token_and_the_old_one_is_stale() {
    let (executor, mut tokens) = executor();
    let run = executor.spawn(parcel::Machine::new(parcel::Packed { id: 2 }));
    let first = tokens.recv().await.unwrap();
    executor
        .fail(&first, StepError::retryable("carrier", "truck broke down"))
        .unwrap();
    let second = tokens.recv().await.unwrap();
    assert_ne!(first, second);
    let stale = executor
        .complete::<parcel::Shipped, _>(&first, |p| p.deliver(|s| parcel::Delivered { id: s.id }));
    assert_eq!(stale, Err(TokenError::AlreadyUsed));
    executor
        .complete::<parcel::Shipped, _>(&second, |p| p.deliver(|s| parcel::Lost { id: s.id }))
        .unwrap();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(outcome.state, Parcel::Lost { id: 2 });
    let k = kinds(&outcome.history);
    assert_eq!(
        k.iter().filter(|k| **k == "wait started").count(),
        2,
        "{k:?}"
    );
    assert!(
        k.contains(&"retry scheduled") && k.contains(&"step failed"),
        "{k:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_times_out_is_retried_then_routed_and_its_tokens_are_refused() {
    let (executor, mut tokens) = executor();
    let started = tokio::time::Instant::now();
    let run = executor.spawn(parcel::Machine::new(parcel::Packed { id: 3 }));
    let first = tokens.recv().await.unwrap();
    let second = tokens.recv().await.unwrap();
    // The first wait timed out after 1 s; its token is refused as such.
    let late = executor
        .complete::<parcel::Shipped, _>(&first, |p| p.deliver(|s| parcel::Delivered { id: s.id }));
    assert_eq!(late, Err(TokenError::TimedOut));
    let outcome = run.await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(2_010));
    assert_eq!(
        outcome.state,
        Parcel::Lost { id: 3 },
        "routed by catch(timeout => Lost)"
    );
    let timed_out = outcome
        .history
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepTimedOut { .. }))
        .count();
    assert_eq!(timed_out, 2);
    drop(second);
}

#[tokio::test(start_paused = true)]
async fn malformed_and_forged_tokens_are_refused_and_change_nothing() {
    let (executor, mut tokens) = executor();
    let run = executor.spawn(parcel::Machine::new(parcel::Packed { id: 4 }));
    let token = tokens.recv().await.unwrap();
    let deliver =
        |p: parcel::Machine<parcel::Shipped>| p.deliver(|s| parcel::Delivered { id: s.id });
    for malformed in [
        "",
        "hello",
        &token[..token.len() - 1],
        &format!("{token}.1"),
    ] {
        assert_eq!(
            executor.complete::<parcel::Shipped, _>(malformed, deliver),
            Err(TokenError::Malformed)
        );
    }
    // The same execution and wait, another secret.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        executor.complete::<parcel::Shipped, _>(&forged, deliver),
        Err(TokenError::Forged)
    );
    executor
        .complete::<parcel::Shipped, _>(&token, deliver)
        .unwrap();
    assert_eq!(run.await.unwrap().state, Parcel::Delivered { id: 4 });
}
