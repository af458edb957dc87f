//! Operators' actions on both stores (a module of `tests/durable.rs`, sharing its harness): redrive,
//! cancel, a wait answered by hand, bulk over a filter, and each raced against a worker that
//! drives the same executions.

use super::*;
use fsm_core::{Action, Operator, OpsError};
use std::collections::HashSet;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[fsm(module = ticket)]
pub enum Ticket {
    #[fsm(initial, on(assign => Assigned | Rejected))]
    Opened { id: u32 },
    #[fsm(wait, on(close => Closed), catch(escalated => Escalated))]
    Assigned { id: u32, agent: String },
    #[fsm(terminal)]
    Closed { id: u32, note: String },
    #[fsm(terminal)]
    Escalated { id: u32 },
    #[fsm(terminal(failure))]
    Rejected { id: u32 },
}

/// The help desk the steps call, scripted by the test.
#[derive(Default)]
pub struct Desk {
    /// While set, assigning fails for good.
    pub(super) broken: std::sync::atomic::AtomicBool,
    /// Each assignment's idempotency key, in order.
    pub(super) keys: Mutex<Vec<(u32, String)>>,
    /// The tickets whose assignment is running now.
    pub(super) running: Mutex<HashSet<u32>>,
    /// Tickets whose assignment started while another of theirs was running.
    pub(super) overlaps: Mutex<Vec<u32>>,
    /// How long an assignment takes, in milliseconds, by ticket (none: at once).
    pub(super) slow: Option<fn(u32) -> u64>,
    /// Blocks each assignment until the test says.
    pub(super) gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Tokens handed to the agents, by ticket.
    pub(super) tokens: Mutex<Vec<(u32, String)>>,
}

impl ticket::Steps for Desk {
    async fn opened(
        &self,
        t: ticket::Machine<ticket::Opened>,
        cx: Context,
    ) -> Result<ticket::OpenedNext, StepError> {
        let id = t.id;
        if !self.running.lock().unwrap().insert(id) {
            self.overlaps.lock().unwrap().push(id);
        }
        self.keys
            .lock()
            .unwrap()
            .push((id, cx.idempotency_key().to_string()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(slow) = self.slow {
            tokio::time::sleep(Duration::from_millis(slow(id))).await;
        }
        self.running.lock().unwrap().remove(&id);
        if self.broken.load(Ordering::SeqCst) {
            return Err(StepError::fatal("helpdesk", "the help desk is down"));
        }
        if id == 0 {
            return Ok(t.assign(|s| ticket::Rejected { id: s.id }).into());
        }
        Ok(t.assign(|s| ticket::Assigned {
            id: s.id,
            agent: "ana".into(),
        })
        .into())
    }

    async fn assigned(
        &self,
        t: ticket::Machine<ticket::Assigned>,
        _: Context,
        token: TaskToken,
    ) -> Result<(), StepError> {
        self.tokens.lock().unwrap().push((t.id, token.to_string()));
        Ok(())
    }

    fn catch_assigned_to_escalated(
        &self,
        failed: ticket::Assigned,
        _: &StepError,
    ) -> ticket::Escalated {
        ticket::Escalated { id: failed.id }
    }
}

pub(super) type Desked = DurableExecutor<Ticket, Desk, AnyStore>;

pub(super) async fn desk(db: &Db, desk: Desk) -> Desked {
    Executor::<Ticket, Desk>::builder(desk)
        .durable(db.store().await)
        .unwrap()
}

/// An operator in a process beside the worker, as the command line is.
async fn operator(db: &Db) -> Operator<AnyStore> {
    Operator::new(db.store_beside_worker().await, "ops:test")
}

pub(super) fn close(t: ticket::Machine<ticket::Assigned>) -> ticket::Machine<ticket::Closed> {
    t.close(|s| ticket::Closed {
        id: s.id,
        note: "fixed".into(),
    })
}

/// Waits until the execution's row satisfies `f`.
async fn row_until(
    ex: &Desked,
    id: ExecutionId,
    f: impl Fn(&fsm_core::ExecutionRecord) -> bool,
) -> fsm_core::ExecutionRecord {
    for _ in 0..4_000 {
        let row = ex.get(id).await.unwrap();
        if f(&row) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("execution {id} never got there: {:?}", ex.get(id).await);
}

fn waiting(row: &fsm_core::ExecutionRecord) -> bool {
    row.status == ExecutionStatus::Waiting && row.waiting_for == Some(fsm_core::WaitingFor::Token)
}

on_both_stores!(
    an_errored_execution_is_redriven_where_it_failed_with_a_new_key_and_its_history_kept,
    async
);
async fn an_errored_execution_is_redriven_where_it_failed_with_a_new_key_and_its_history_kept(
    db: Db,
) {
    let d = Desk::default();
    d.broken.store(true, Ordering::SeqCst);
    let ex = desk(&db, d).await;
    let ops = operator(&db).await;
    let id = ex
        .start(ticket::Machine::new(ticket::Opened { id: 1 }))
        .await
        .unwrap();
    let row = ex.finished(id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Errored);
    assert_eq!(row.state_name, "Opened");
    // Not while it runs, nor once it succeeded, nor when the machine chose a failure state.
    ex.steps().broken.store(false, Ordering::SeqCst);
    ops.redrive(id).await.unwrap();
    let again = ops.redrive(id).await.unwrap_err();
    assert!(
        matches!(
            again,
            OpsError::NotApplicable {
                action: "redrive",
                ..
            }
        ),
        "{again}"
    );
    let row = row_until(&ex, id, waiting).await;
    assert_eq!((row.state_name.as_str(), row.attempt), ("Assigned", 1));
    let keys = ex.steps().keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(
        keys[0].1, keys[1].1,
        "a redriven step has a new idempotency key"
    );
    let history = ex.history(id).await.unwrap().to_string();
    for line in [
        "execution failed     Opened    after 1 attempt(s): helpdesk: the help desk is down",
        "execution redriven   Opened    by ops:test",
        "transition           Opened    --assign--> Assigned",
    ] {
        assert!(history.contains(line), "{line}\n{history}");
    }
    let token = ex.steps().tokens.lock().unwrap()[0].1.clone();
    ex.complete::<ticket::Assigned, _>(&token, close)
        .await
        .unwrap();
    assert_eq!(
        ex.finished(id).await.unwrap().status,
        ExecutionStatus::Succeeded
    );
    let done = ops.redrive(id).await.unwrap_err();
    assert_eq!(
        done,
        OpsError::NotApplicable {
            execution: id,
            action: "redrive",
            status: ExecutionStatus::Succeeded
        }
    );
    let rejected = ex
        .start(ticket::Machine::new(ticket::Opened { id: 0 }))
        .await
        .unwrap();
    assert_eq!(
        ex.finished(rejected).await.unwrap().status,
        ExecutionStatus::Failed
    );
    let err = ops.redrive(rejected).await.unwrap_err();
    assert_eq!(
        err,
        OpsError::EndedByMachine {
            execution: rejected,
            state: "Rejected".into()
        }
    );
    assert!(err.to_string().contains("as its machine decided"), "{err}");
    let missing = ExecutionId::from_u128(7);
    assert_eq!(
        ops.redrive(missing).await,
        Err(OpsError::NotFound { execution: missing })
    );
}

on_both_stores!(
    a_cancelled_wait_ends_its_tokens_answer_nothing_and_a_redrive_waits_again,
    async
);
async fn a_cancelled_wait_ends_its_tokens_answer_nothing_and_a_redrive_waits_again(db: Db) {
    let ex = desk(&db, Desk::default()).await;
    let ops = operator(&db).await;
    let id = ex
        .start(ticket::Machine::new(ticket::Opened { id: 2 }))
        .await
        .unwrap();
    row_until(&ex, id, waiting).await;
    ops.cancel(id).await.unwrap();
    let row = ex.finished(id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Cancelled);
    assert_eq!(row.lease_owner, None);
    let token = ex.steps().tokens.lock().unwrap()[0].1.clone();
    assert_eq!(
        ex.complete::<ticket::Assigned, _>(&token, close).await,
        Err(TokenError::Cancelled)
    );
    assert_eq!(
        ops.cancel(id).await,
        Err(OpsError::NotApplicable {
            execution: id,
            action: "cancel",
            status: ExecutionStatus::Cancelled
        })
    );
    let history = ex.history(id).await.unwrap().to_string();
    assert!(
        history.contains("execution cancelled  Assigned  by ops:test"),
        "{history}"
    );
    // Redriven, it waits again with a new token; the old one still answers nothing.
    ops.redrive(id).await.unwrap();
    until(|| ex.steps().tokens.lock().unwrap().len() == 2).await;
    row_until(&ex, id, waiting).await;
    assert!(ex
        .complete::<ticket::Assigned, _>(&token, close)
        .await
        .is_err());
    let fresh = ex.steps().tokens.lock().unwrap()[1].1.clone();
    ex.complete::<ticket::Assigned, _>(&fresh, close)
        .await
        .unwrap();
    assert_eq!(ex.finished(id).await.unwrap().state_name, "Closed");
}

on_both_stores!(
    a_running_step_is_not_interrupted_by_a_cancel_and_its_result_is_discarded,
    async
);
async fn a_running_step_is_not_interrupted_by_a_cancel_and_its_result_is_discarded(db: Db) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ex = desk(
        &db,
        Desk {
            gate: Some(Arc::clone(&gate)),
            ..Desk::default()
        },
    )
    .await;
    let ops = operator(&db).await;
    let id = ex
        .start(ticket::Machine::new(ticket::Opened { id: 3 }))
        .await
        .unwrap();
    until(|| ex.steps().keys.lock().unwrap().len() == 1).await;
    ops.cancel(id).await.unwrap();
    gate.add_permits(1);
    // The worker's checkpoint is refused: the execution stays cancelled, in `Opened`.
    until(|| ex.steps().running.lock().unwrap().is_empty()).await;
    ex.idle().await;
    let row = ex.get(id).await.unwrap();
    assert_eq!(
        (row.status, row.state_name.as_str()),
        (ExecutionStatus::Cancelled, "Opened")
    );
    assert!(ex.steps().tokens.lock().unwrap().is_empty());
    let history = ex.history(id).await.unwrap();
    assert_eq!(
        history.events().last().unwrap().kind.name(),
        "execution cancelled"
    );
    assert!(ex.problems().is_empty(), "{:?}", ex.problems());
}

on_both_stores!(
    a_wait_is_answered_by_hand_typed_or_as_json_checked_against_the_machine,
    async
);
async fn a_wait_is_answered_by_hand_typed_or_as_json_checked_against_the_machine(db: Db) {
    let ex = desk(&db, Desk::default()).await;
    let ops = operator(&db).await;
    let client =
        DurableClient::<Ticket, _>::new(db.store_beside_worker().await).answering_as("ops:typed");
    let a = ex
        .start(ticket::Machine::new(ticket::Opened { id: 4 }))
        .await
        .unwrap();
    let b = ex
        .start(ticket::Machine::new(ticket::Opened { id: 5 }))
        .await
        .unwrap();
    let c = ex
        .start(ticket::Machine::new(ticket::Opened { id: 6 }))
        .await
        .unwrap();
    for id in [a, b, c] {
        row_until(&ex, id, waiting).await;
    }
    client
        .complete_by_hand::<ticket::Assigned, _>(a, close)
        .await
        .unwrap();
    let row = ex.finished(a).await.unwrap();
    assert_eq!(row.state_name, "Closed");
    let history = ex.history(a).await.unwrap().to_string();
    assert!(
        history.contains("attempt 1, answered by hand by ops:typed"),
        "{history}"
    );

    // As JSON, the command line's way: checked against the definition the worker registered.
    let wrong = serde_json::json!({ "Rejected": { "id": 5 } });
    let err = ops.complete(b, &wrong).await.unwrap_err();
    assert!(
        matches!(&err, OpsError::BadAnswer { message, .. }
            if message.contains("`Assigned` leads to `Closed`, not to `Rejected`")),
        "{err}"
    );
    let right = serde_json::json!({ "Closed": { "id": 5, "note": "by hand" } });
    ops.complete(b, &right).await.unwrap();
    let state = ex.state(ex.finished(b).await.unwrap().id).await.unwrap();
    assert_eq!(
        state,
        Ticket::Closed {
            id: 5,
            note: "by hand".into()
        }
    );
    // Answered: the agent's token no longer answers.
    let token_b = ex
        .steps()
        .tokens
        .lock()
        .unwrap()
        .iter()
        .find(|(id, _)| *id == 5)
        .unwrap()
        .1
        .clone();
    assert_eq!(
        ex.complete::<ticket::Assigned, _>(&token_b, close).await,
        Err(TokenError::AlreadyUsed)
    );
    assert!(matches!(
        ops.complete(b, &right).await,
        Err(OpsError::NotApplicable { .. })
    ));
    // Failed by hand: the waiting state's catch route applies.
    ops.fail(c, StepError::fatal("escalated", "the customer called"))
        .await
        .unwrap();
    assert_eq!(ex.finished(c).await.unwrap().state_name, "Escalated");
    let history = ex.history(c).await.unwrap().to_string();
    assert!(
        history.lines().any(|l| l.contains("wait failed")
            && l.ends_with("Assigned   attempt 1, answered by hand by ops:test")),
        "{history}"
    );
    // Not waiting: refused with what it is.
    assert!(matches!(
        ops.fail(c, StepError::fatal("x", "y")).await,
        Err(OpsError::NotApplicable { .. })
    ));
}

on_both_stores!(
    a_bulk_action_counts_first_then_applies_to_what_the_filter_selects_up_to_a_limit,
    async
);
async fn a_bulk_action_counts_first_then_applies_to_what_the_filter_selects_up_to_a_limit(db: Db) {
    let d = Desk::default();
    d.broken.store(true, Ordering::SeqCst);
    let ex = desk(&db, d).await;
    let ops = operator(&db).await;
    let mut ids = Vec::new();
    for id in 10..16 {
        ids.push(
            ex.start(ticket::Machine::new(ticket::Opened { id }))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        ex.finished(*id).await.unwrap();
    }
    ex.steps().broken.store(false, Ordering::SeqCst);
    let errored = ListQuery::new()
        .machine("Ticket")
        .status(ExecutionStatus::Errored)
        .state("Opened");
    assert_eq!(ops.count(errored.clone()).await.unwrap(), 6);
    // The first four in the list's order (by start time, then id).
    let listed = ex.list(errored.clone().limit(4)).await.unwrap().executions;
    let first_four: Vec<ExecutionId> = listed.iter().map(|e| e.id).collect();
    let first = ops.bulk(Action::Redrive, errored.clone(), 4).await.unwrap();
    assert_eq!(first.done, first_four);
    assert!(first.refused.is_empty());
    assert_eq!(ops.count(errored.clone()).await.unwrap(), 2);
    for id in &first.done {
        row_until(&ex, *id, waiting).await;
    }
    let waiting_now = ListQuery::new()
        .status(ExecutionStatus::Waiting)
        .state("Assigned");
    let cancelled = ops.bulk(Action::Cancel, waiting_now, 0).await.unwrap();
    assert_eq!(cancelled.done.len(), 4);
    let rest = ops.bulk(Action::Redrive, errored, 0).await.unwrap();
    let mut all: Vec<ExecutionId> = first.done.iter().chain(&rest.done).copied().collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids);
}

on_both_stores!(
    cancels_raced_against_a_running_worker_lose_nothing_and_run_no_step_twice,
    async
);
async fn cancels_raced_against_a_running_worker_lose_nothing_and_run_no_step_twice(db: Db) {
    let ex = desk(
        &db,
        Desk {
            slow: Some(|id| u64::from(id % 7) * 3),
            ..Desk::default()
        },
    )
    .await;
    let ops = Arc::new(operator(&db).await);
    let mut ids = Vec::new();
    for id in 1..=40 {
        ids.push(
            ex.start(ticket::Machine::new(ticket::Opened { id }))
                .await
                .unwrap(),
        );
    }
    // Each cancelled at its own moment: before its step, during it, or while it waits.
    let mut cancels = Vec::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let ops = Arc::clone(&ops);
        cancels.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 40)).await;
            ops.cancel(id).await
        }));
    }
    for c in cancels {
        c.await.unwrap().unwrap();
    }
    ex.idle().await;
    let d = ex.steps();
    assert!(
        d.overlaps.lock().unwrap().is_empty(),
        "a step ran twice at once"
    );
    let keys = d.keys.lock().unwrap().clone();
    for id in &ids {
        let row = ex.get(*id).await.unwrap();
        assert_eq!(row.status, ExecutionStatus::Cancelled, "{row:?}");
        let stored = db_events(&ex, *id).await;
        assert_eq!(stored, row.events, "every event the row counts is stored");
        let history = ex.history(*id).await.unwrap();
        let kinds: Vec<&str> = history.events().iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds.last(), Some(&"execution cancelled"), "{kinds:?}");
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "execution cancelled")
                .count(),
            1
        );
        // Its state is the last one a checkpoint committed: the transition, if it is there.
        let moved = kinds.contains(&"transition");
        assert_eq!(row.state_name == "Assigned", moved, "{kinds:?}");
    }
    let mut ran: Vec<u32> = keys.iter().map(|(id, _)| *id).collect();
    let all = ran.len();
    ran.dedup();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran.len(), all, "no step ran twice: {keys:?}");
    assert!(ex.problems().is_empty(), "{:?}", ex.problems());
}

/// How many history events are stored for `id`.
async fn db_events(ex: &Desked, id: ExecutionId) -> u32 {
    ex.store().events(id).await.unwrap().len() as u32
}

on_both_stores!(
    redrives_and_answers_raced_against_each_other_and_a_worker_take_effect_once,
    async
);
async fn redrives_and_answers_raced_against_each_other_and_a_worker_take_effect_once(db: Db) {
    let d = Desk {
        slow: Some(|id| u64::from(id % 5) * 2),
        ..Desk::default()
    };
    d.broken.store(true, Ordering::SeqCst);
    let ex = desk(&db, d).await;
    let (one, two) = (Arc::new(operator(&db).await), Arc::new(operator(&db).await));
    let mut ids = Vec::new();
    for id in 1..=20 {
        ids.push(
            ex.start(ticket::Machine::new(ticket::Opened { id }))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        ex.finished(*id).await.unwrap();
    }
    ex.steps().broken.store(false, Ordering::SeqCst);
    // Two operators redrive every one at once, while the worker takes the first ones up.
    let mut races = Vec::new();
    for id in ids.iter().copied() {
        let (one, two) = (Arc::clone(&one), Arc::clone(&two));
        races.push(tokio::spawn(async move {
            let (a, b) = tokio::join!(one.redrive(id), two.redrive(id));
            (a, b)
        }));
    }
    for race in races {
        let (a, b) = race.await.unwrap();
        assert!(a.is_ok() != b.is_ok(), "exactly one redrive: {a:?} {b:?}");
        let refused = a.err().or(b.err()).unwrap();
        assert!(
            matches!(refused, OpsError::NotApplicable { .. }),
            "{refused}"
        );
    }
    for id in &ids {
        row_until(&ex, *id, waiting).await;
    }
    let d = ex.steps();
    assert!(
        d.overlaps.lock().unwrap().is_empty(),
        "a step ran twice at once"
    );
    assert_eq!(
        d.keys.lock().unwrap().len(),
        40,
        "each step ran once, then once redriven"
    );
    // The agent's token and an operator's answer by hand, at once: one decides.
    let tokens = d.tokens.lock().unwrap().clone();
    let mut answers = Vec::new();
    for (ticket_id, token) in tokens {
        let id = ids[ticket_id as usize - 1];
        let by_hand = Arc::clone(&one);
        let answer = serde_json::json!({ "Closed": { "id": ticket_id, "note": "by hand" } });
        let agent = ex.clone();
        answers.push(tokio::spawn(async move {
            let (a, b) = tokio::join!(
                agent.complete::<ticket::Assigned, _>(&token, close),
                by_hand.complete(id, &answer)
            );
            (id, a.is_ok(), b.is_ok())
        }));
    }
    for answer in answers {
        let (id, agent, by_hand) = answer.await.unwrap();
        assert!(agent != by_hand, "exactly one answer decides");
        let row = ex.finished(id).await.unwrap();
        let state = ex.state(row.id).await.unwrap();
        let note = if agent { "fixed" } else { "by hand" };
        assert!(
            matches!(&state, Ticket::Closed { note: n, .. } if n == note),
            "{state:?}"
        );
        let history = ex.history(id).await.unwrap();
        let answered = history
            .events()
            .iter()
            .filter(|e| e.kind.name() == "wait completed")
            .count();
        assert_eq!(answered, 1);
    }
    assert!(ex.problems().is_empty(), "{:?}", ex.problems());
}

on_both_stores!(
    an_execution_whose_data_cannot_be_read_is_set_aside_errored_and_redriven_once_it_reads,
    async
);
async fn an_execution_whose_data_cannot_be_read_is_set_aside_errored_and_redriven_once_it_reads(
    db: Db,
) {
    let (id, original) = {
        let ex = desk(&db, Desk::default()).await;
        let id = ex
            .start(ticket::Machine::new(ticket::Opened { id: 8 }))
            .await
            .unwrap();
        let row = row_until(&ex, id, waiting).await;
        ex.shutdown().await;
        (id, row.state)
    };
    // The row's data as a later release would not read it.
    db.sql(&format!(
        "UPDATE executions SET state = '{{\"Assigned\":{{\"id\":\"eight\"}}}}', \
         status = 'running', due_at = 0 WHERE id = '{id}'"
    ))
    .await;
    let ex = desk(&db, Desk::default()).await;
    let err = ex.finished(id).await.unwrap_err();
    assert!(
        matches!(&err, DurableError::BadState { execution, .. } if *execution == id),
        "{err}"
    );
    let row = ex.get(id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Errored);
    assert_eq!(row.lease_owner, None);
    assert!(
        row.error.as_deref().unwrap().starts_with("bad_state: "),
        "{:?}",
        row.error
    );
    // Listed with the errored ones, for an operator to see.
    let errored = ListQuery::new().status(ExecutionStatus::Errored);
    assert_eq!(ex.list(errored).await.unwrap().executions.len(), 1);
    // Fixed by hand (as a definition that reads it again would), then redriven: it waits
    // again, with a new token.
    db.sql(&format!(
        "UPDATE executions SET state = '{original}' WHERE id = '{id}'"
    ))
    .await;
    operator(&db).await.redrive(id).await.unwrap();
    // (This worker handed out none before.)
    until(|| ex.steps().tokens.lock().unwrap().len() == 1).await;
    let row = row_until(&ex, id, waiting).await;
    assert_eq!(row.state_name, "Assigned");
}
