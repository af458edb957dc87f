//! A durable parent's branches: each branch of a Parallel state and each item of a Map is an
//! execution of its own in the parent's store (its row names the parent), checkpointed
//! before each of its steps as any durable execution is, and driven by the parent's worker
//! inside the parent's fan-out step. No worker claims a branch on its own (its row has no due
//! time): when a worker stops in the middle, the parent is claimed again, its fan-out step
//! runs again, and each branch goes on from its row: an ended branch hands its end to the
//! join without running again, a running one resumes from its last checkpoint, one that had
//! not begun starts.

use core::future::Future;
use core::pin::Pin;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::durable::client::Clock;
use crate::durable::error::DurableError;
use crate::durable::executor::{advanced, ended_status, snapshot};
use crate::durable::store::{
    codec, Checkpoint, Created, ExecutionRecord, ExecutionStatus, ListQuery, NewExecution, Store,
    StoreError,
};
use crate::runtime::driver::{Cloned, Cold, Deadline, Driver, Guard};
use crate::runtime::executor::{after_failure, stopped, AfterFailure, Host, Outcome, Stopped};
use crate::runtime::fan_out::{fans_out, BranchData};
use crate::runtime::random::JitterSource;
use crate::runtime::recorder::Recorder;
use crate::{Dispatch, EventKind, ExecutionId, Fsm, History, HistoryEvent, Status, StepError};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a durable parent's fan-outs keep their branches: the parent's store, seen without
/// its type (the generated step loop knows the machines, not the store), and what stops the
/// parent when the store fails a branch's write.
pub(crate) trait Children: Sync {
    /// The executions stored as `parent`'s branches.
    fn existing(
        &self,
        parent: ExecutionId,
    ) -> BoxFuture<'_, Result<HashSet<ExecutionId>, StoreError>>;
    fn get(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<ExecutionRecord>, StoreError>>;
    fn events(
        &self,
        id: ExecutionId,
    ) -> BoxFuture<'_, Result<Vec<crate::store::StoredEvent>, StoreError>>;
    fn create(&self, new: NewExecution) -> BoxFuture<'_, Result<Created, StoreError>>;
    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn clock(&self) -> &Clock;
    /// Stops the parent: a branch could not be stored (the parent's drive ends with this
    /// error, without a checkpoint, and goes on from its last one where it is claimed next).
    fn interrupt(&self, error: DurableError);
    /// Why the parent must stop, if a branch's write failed.
    fn interruption(&self) -> Option<DurableError>;
    /// Whether a branch's write failed (the error stays for [`Children::interruption`]).
    fn is_interrupted(&self) -> bool;
}

/// The [`Children`] of one drive of a durable execution.
pub(crate) struct StoreChildren<'s, S> {
    store: &'s S,
    clock: &'s Clock,
    interruption: Mutex<Option<DurableError>>,
}

impl<'s, S> StoreChildren<'s, S> {
    pub(crate) fn new(store: &'s S, clock: &'s Clock) -> Self {
        StoreChildren {
            store,
            clock,
            interruption: Mutex::new(None),
        }
    }
}

impl<S: Store> Children for StoreChildren<'_, S> {
    fn existing(
        &self,
        parent: ExecutionId,
    ) -> BoxFuture<'_, Result<HashSet<ExecutionId>, StoreError>> {
        Box::pin(async move {
            let page = self
                .store
                .list(ListQuery::new().parent(parent).limit(0))
                .await?;
            Ok(page.executions.into_iter().map(|e| e.id).collect())
        })
    }
    fn get(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<ExecutionRecord>, StoreError>> {
        Box::pin(self.store.get(id))
    }
    fn events(
        &self,
        id: ExecutionId,
    ) -> BoxFuture<'_, Result<Vec<crate::store::StoredEvent>, StoreError>> {
        Box::pin(self.store.events(id))
    }
    fn create(&self, new: NewExecution) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(self.store.create(new))
    }
    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.store.checkpoint(checkpoint))
    }
    fn clock(&self) -> &Clock {
        self.clock
    }
    fn interrupt(&self, error: DurableError) {
        let mut slot = self.interruption.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(error);
    }
    fn interruption(&self) -> Option<DurableError> {
        let mut slot = self.interruption.lock().unwrap_or_else(|e| e.into_inner());
        slot.take()
    }
    fn is_interrupted(&self) -> bool {
        let slot = self.interruption.lock().unwrap_or_else(|e| e.into_inner());
        slot.is_some()
    }
}

/// A branch to run durably.
pub(crate) struct Child {
    pub(crate) id: ExecutionId,
    pub(crate) parent: ExecutionId,
    /// Whether the store had its row when the fan-out began (an earlier run of the parent's
    /// step started it).
    pub(crate) stored: bool,
    /// Its machine's fingerprint (made once for all of a Map's items).
    pub(crate) fingerprint: Arc<str>,
}

/// Runs `child` from its row (or from `start`, writing its row), checkpointing each of its
/// transitions. When the store fails, the parent is interrupted, and the branch ends errored
/// in `start` (which the fan-out reads as the interruption, not as the branch's failure).
pub(crate) async fn run<B, H, X>(
    children: &dyn Children,
    host: &X,
    child: Child,
    start: B,
) -> Outcome<B>
where
    B: Dispatch<H> + Clone + BranchData,
    H: Sync,
    X: Host<B, H>,
{
    let (id, fallback) = (child.id, start.clone());
    match drive(children, host, child, start).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let message = format!("the store failed its checkpoint: {error}");
            children.interrupt(error);
            Outcome {
                id,
                state: fallback,
                status: Status::Errored {
                    attempts: 0,
                    error: StepError::fatal("interrupted", message),
                },
                history: History::default(),
            }
        }
    }
}

/// Marks the branch `id` cancelled (another branch failed the fan-out), unless it ended.
pub(crate) async fn cancel(children: &dyn Children, id: ExecutionId, parent: ExecutionId) {
    let cancelled = async {
        let Some(row) = children.get(id).await? else {
            return Ok(());
        };
        if row.status.is_final() {
            return Ok(());
        }
        let now = children.clock().now();
        let by = format!("parent {parent}");
        let event = codec::row_event(
            &row,
            "execution cancelled",
            serde_json::json!({ "by": by }),
            now,
        );
        let mut next = row;
        next.status = ExecutionStatus::Cancelled;
        let change = crate::durable::ops::released(next, now, vec![event], Vec::new());
        children.checkpoint(change).await.map(drop)
    };
    if let Err(e) = cancelled.await {
        children.interrupt(e.into());
    }
}

async fn drive<B, H, X>(
    children: &dyn Children,
    host: &X,
    child: Child,
    start: B,
) -> Result<Outcome<B>, DurableError>
where
    B: Dispatch<H> + Clone + BranchData,
    H: Sync,
    X: Host<B, H>,
{
    let def = B::DEFINITION;
    let id = child.id;
    let stored = match child.stored {
        true => children.get(id).await?,
        false => None,
    };
    let resumed = stored.is_some();
    let (mut row, mut state, mut kept) = match stored {
        Some(row) => {
            let history = stored_history::<B>(children, id).await?;
            let state = match B::from_json(&row.state) {
                Ok(state) => state,
                Err(e) => {
                    let message = format!("its stored state does not read: {e}");
                    return Ok(Outcome {
                        id,
                        state: start,
                        status: Status::Errored {
                            attempts: row.attempt,
                            error: StepError::fatal(StepError::BAD_STATE, message),
                        },
                        history: History::from_events(history),
                    });
                }
            };
            if row.status.is_final() {
                return Ok(ended(row, state, history));
            }
            (row, state, history)
        }
        None => {
            let (new, started) = new_row(&child, &start, children.clock().now())?;
            let row = new.record.clone();
            if let Created::Existing(row) = children.create(new).await? {
                // Branches have no names: a row is never found in its place.
                return Err(StoreError::Conflict { execution: row.id }.into());
            }
            (row, start, vec![started])
        }
    };
    let deadline = Deadline::new(host.has_timeouts());
    let origin = children.clock().instant(row.created_at);
    let rec = Recorder::durable(id, host.recording(), def, origin, row.events as usize);
    let (at, policies) = ((row.step, row.attempt), host.policies());
    // A branch that fans out keeps its own branches in the same store, linked to it.
    let cold = Cold {
        children: Some(children),
        ..Cold::default()
    };
    let mut driver = Driver::stepwise(id, at, policies, cold, rec, &deadline);
    if resumed {
        let (name, changed) = (state.state_name(), row.fingerprint != *child.fingerprint);
        driver.rec.event_now(|| EventKind::ExecutionResumed {
            state: name,
            definition_changed: changed,
        });
    }
    let mut jitter = JitterSource::for_execution(host.jitter_seed(), id);
    let mut write = Writer {
        children,
        fingerprint: &child.fingerprint,
        kept: &mut kept,
    };
    loop {
        // Each run of the loop takes one step, then pauses for its checkpoint.
        driver.cold().began = false;
        let fanning = fans_out(&state);
        let stop = Guard::new(state.run::<Cloned>(host.steps(), &mut driver), &deadline).await;
        deadline.disarm();
        let verdict = deadline.take_verdict();
        // Its own fan-out was interrupted: so is it, and its parent.
        if let Some(error) = fanning.then(|| children.interruption()).flatten() {
            return Err(error);
        }
        let (failed, error, timed_out) = match stopped(stop, verdict, &mut driver) {
            Stopped::Ended(end) => {
                let outcome = driver.finish(end);
                return write.end(&mut row, &mut driver, outcome).await;
            }
            Stopped::GaveUp(failed, error) => {
                let outcome = driver.give_up(failed, error);
                return write.end(&mut row, &mut driver, outcome).await;
            }
            Stopped::Paused(next) => {
                let status = ExecutionStatus::Running;
                write.save(&mut row, &mut driver, &next, status).await?;
                state = next;
                continue;
            }
            // The derive refuses a branch machine that waits.
            Stopped::Waiting(waiting) => {
                let message = "a branch's machine stopped to wait for a task token";
                (waiting, StepError::fatal("wait", message), None)
            }
            Stopped::Failed(failed, error, timed_out) => (failed, error, timed_out),
        };
        let steps = host.steps();
        state = match after_failure(steps, &mut driver, failed, error, timed_out, &mut jitter) {
            AfterFailure::Retry(failed, delay) => {
                let status = ExecutionStatus::Running;
                write.save(&mut row, &mut driver, &failed, status).await?;
                Box::pin(tokio::time::sleep(delay)).await;
                failed
            }
            AfterFailure::Routed(next) => {
                let status = ExecutionStatus::Running;
                write.save(&mut row, &mut driver, &next, status).await?;
                next
            }
            AfterFailure::Errored(failed, error) => {
                let outcome = driver.give_up(failed, error);
                return write.end(&mut row, &mut driver, outcome).await;
            }
        };
    }
}

/// The row of a branch about to start in `start` at `now`, with its first event.
fn new_row<B: Fsm + BranchData>(
    child: &Child,
    start: &B,
    now: crate::store::Millis,
) -> Result<(NewExecution, HistoryEvent), DurableError> {
    let (state, _) = snapshot(start, child.id)?;
    let started = HistoryEvent {
        at: core::time::Duration::ZERO,
        kind: EventKind::ExecutionStarted {
            state: start.state_name(),
        },
    };
    let record = ExecutionRecord {
        id: child.id,
        name: None,
        machine: B::DEFINITION.name.to_owned(),
        fingerprint: child.fingerprint.to_string(),
        state_name: start.state_name().to_owned(),
        state,
        status: ExecutionStatus::Running,
        waiting_for: None,
        step: 0,
        attempt: 1,
        entered_at: now,
        // No due time: no worker claims it; its parent's drives it.
        due_at: None,
        error: None,
        events: 1,
        created_at: now,
        updated_at: now,
        lease_owner: None,
        lease_expires: None,
        version: 1,
        claims: 0,
        parent: Some(child.parent),
    };
    let new = NewExecution {
        record,
        events: vec![codec::encode(&started, 0)],
        token: None,
    };
    Ok((new, started))
}

/// The outcome of a branch whose row says it ended (before the parent's step ran again).
fn ended<B>(row: ExecutionRecord, state: B, history: Vec<HistoryEvent>) -> Outcome<B> {
    let status = match row.status {
        ExecutionStatus::Succeeded => Status::Succeeded,
        ExecutionStatus::Failed => Status::Failed,
        status => {
            let text = row.error.as_deref().unwrap_or_default();
            let error = match (status, text.split_once(": ")) {
                (ExecutionStatus::Cancelled, _) => {
                    StepError::fatal("cancelled", "the branch was cancelled")
                }
                (_, Some((kind, message))) => StepError::fatal(kind.to_owned(), message),
                (_, None) => StepError::fatal("error", text),
            };
            Status::Errored {
                attempts: row.attempt,
                error,
            }
        }
    };
    Outcome {
        id: row.id,
        state,
        status,
        history: History::from_events(history),
    }
}

/// The stored history of branch `id`, as far as `B`'s definition reads it (an event it no
/// longer reads is left out of what the join sees; the store keeps it).
async fn stored_history<B: Fsm>(
    children: &dyn Children,
    id: ExecutionId,
) -> Result<Vec<HistoryEvent>, DurableError> {
    let events = children.events(id).await?;
    Ok(events
        .iter()
        .filter_map(|e| codec::decode(B::DEFINITION, e).ok())
        .collect())
}

/// Writes a branch's checkpoints, keeping the events it writes for the join.
struct Writer<'w> {
    children: &'w dyn Children,
    fingerprint: &'w str,
    kept: &'w mut Vec<HistoryEvent>,
}

impl<'w> Writer<'w> {
    /// Checkpoints the branch in `state` with `status`, and the events since the last one.
    /// (Not `async`: the state is serialized before the future is made, so that the future
    /// holds no reference to it and `B` need not be `Sync`.)
    fn save<'s, B: Fsm + BranchData>(
        &'s mut self,
        row: &'s mut ExecutionRecord,
        driver: &mut Driver<'_, B>,
        state: &B,
        status: ExecutionStatus,
    ) -> impl Future<Output = Result<(), DurableError>> + Send + use<'s, 'w, B> {
        let events = driver.rec.drain();
        let next = self.next(
            row,
            (driver.step, driver.attempt),
            state,
            status,
            events.len(),
        );
        self.write(row, next, events)
    }

    /// Writes the end of the branch, and gives its outcome with its whole history.
    async fn end<B: Fsm + BranchData>(
        &mut self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, B>,
        mut outcome: Outcome<B>,
    ) -> Result<Outcome<B>, DurableError> {
        if let Status::Errored { error, .. } = &outcome.status {
            row.error = Some(codec::error_text(error));
        }
        let status = ended_status(&outcome.status);
        let mut events = driver.rec.drain();
        events.extend(outcome.history.events().iter().cloned());
        let at = (driver.step, driver.attempt);
        let next = self.next(row, at, &outcome.state, status, events.len());
        self.write(row, next, events).await?;
        outcome.history = History::from_events(std::mem::take(self.kept));
        Ok(outcome)
    }

    /// The row as the branch in `state` leaves it, with `events` more events.
    fn next<B: Fsm + BranchData>(
        &self,
        row: &ExecutionRecord,
        at: (u32, u32),
        state: &B,
        status: ExecutionStatus,
        events: usize,
    ) -> Result<ExecutionRecord, DurableError> {
        let now = (self.children.clock().now(), self.fingerprint);
        Ok(advanced(
            row,
            snapshot(state, row.id)?,
            status,
            at,
            events,
            now,
        ))
    }

    /// Writes `next` in `row`'s place with `events`, and keeps the events for the join.
    async fn write(
        &mut self,
        row: &mut ExecutionRecord,
        next: Result<ExecutionRecord, DurableError>,
        events: Vec<HistoryEvent>,
    ) -> Result<(), DurableError> {
        let mut next = next?;
        let stored = codec::encode_all(&events, row.events);
        let version = self
            .children
            .checkpoint(Checkpoint {
                record: next.clone(),
                events: stored,
                new_token: None,
                close_tokens: Vec::new(),
            })
            .await?;
        next.version = version;
        *row = next;
        self.kept.extend(events);
        Ok(())
    }
}
