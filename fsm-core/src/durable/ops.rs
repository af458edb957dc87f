//! Layer 3: what an operator does to stored executions: redrive one that ended with an error,
//! cancel one, answer a wait by hand, each over a filter in bulk. Built on the [`Store`]
//! trait alone (no machine's code), so the command line and the console call the same
//! functions on SQLite and PostgreSQL; typed forms for code are on
//! [`DurableClient`](crate::DurableClient).
//!
//! Every action is a read and a fenced write ([`Store::amend`]): if a worker (or another
//! operator) changed the execution between the two, the write is refused and the action reads
//! the execution again and decides afresh, so nothing a worker wrote is lost, and a worker
//! holding the execution finds its next checkpoint refused.

use core::fmt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::durable::client::Clock;
use crate::durable::store::codec;
use crate::durable::store::{
    Checkpoint, ExecutionRecord, ExecutionStatus, ListQuery, Store, StoreError, TokenAnswer,
    TokenStatus, WaitingFor,
};
use crate::{AsTaskToken, Definition, ExecutionId, StepError, TaskToken, TokenError};

/// Why an operator's action was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpsError {
    /// No such execution.
    NotFound {
        /// The execution.
        execution: ExecutionId,
    },
    /// A redrive of an execution that ended in a `terminal(failure)` state: the machine
    /// decided it, so there is nothing to run again.
    EndedByMachine {
        /// The execution.
        execution: ExecutionId,
        /// The failure state it ended in.
        state: String,
    },
    /// The action does not apply to an execution with this status (a redrive of one that is
    /// running, a cancel of one that has ended).
    NotApplicable {
        /// The execution.
        execution: ExecutionId,
        /// `"redrive"`, `"cancel"`, `"complete"` or `"fail"`.
        action: &'static str,
        /// Its status.
        status: ExecutionStatus,
    },
    /// A wait answered by hand, for an execution that does not wait for a token.
    NotWaiting {
        /// The execution.
        execution: ExecutionId,
        /// Its status.
        status: ExecutionStatus,
    },
    /// An answer that is not one the machine accepts: a state that is not a next state of the
    /// waiting state, or data of the wrong shape.
    BadAnswer {
        /// The execution.
        execution: ExecutionId,
        /// What is wrong.
        message: String,
    },
    /// The store has no definition of the machine that the execution last ran under: no
    /// worker of that version registered it (workers register theirs when they start).
    NoDefinition {
        /// The machine.
        machine: String,
        /// The definition's fingerprint the execution names.
        fingerprint: String,
    },
    /// The execution kept changing under the action (a worker writing it many times a
    /// second): nothing was changed; try again.
    Contended {
        /// The execution.
        execution: ExecutionId,
    },
    /// A redrive or cancel of a branch (of a Parallel or Map state): its parent drives it,
    /// and is what an operator redrives or cancels (a cancel of the parent cancels its
    /// branches).
    Branch {
        /// The branch.
        execution: ExecutionId,
        /// The execution it is a branch of.
        parent: ExecutionId,
    },
    /// A task token that answers nothing (forged, used, timed out, of a cancelled
    /// execution...).
    Token(crate::TokenError),
    /// The store refused or could not be reached.
    Store(StoreError),
}

impl fmt::Display for OpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpsError::NotFound { execution } => write!(f, "no execution {execution}"),
            OpsError::EndedByMachine { execution, state } => write!(
                f,
                "execution {execution} ended in the failure state `{state}`, as its machine \
                 decided: it cannot be redriven"
            ),
            OpsError::NotApplicable {
                execution,
                action,
                status,
            } => write!(
                f,
                "execution {execution} is {status}: it cannot be {}",
                done(action)
            ),
            OpsError::NotWaiting { execution, status } => write!(
                f,
                "execution {execution} is {status}, not waiting for a task token"
            ),
            OpsError::BadAnswer { execution, message } => {
                write!(f, "execution {execution}: {message}")
            }
            OpsError::NoDefinition {
                machine,
                fingerprint,
            } => write!(
                f,
                "the store has no definition of `{machine}` with fingerprint {fingerprint}: \
                 start a worker of that version once to register it"
            ),
            OpsError::Branch { execution, parent } => write!(
                f,
                "execution {execution} is a branch of execution {parent}, which drives it: \
                 redrive or cancel {parent}"
            ),
            OpsError::Contended { execution } => write!(
                f,
                "execution {execution} kept changing while it was being changed; nothing was \
                 changed: try again"
            ),
            OpsError::Token(e) => e.fmt(f),
            OpsError::Store(e) => e.fmt(f),
        }
    }
}

fn done(action: &str) -> &str {
    match action {
        "redrive" => "redriven",
        "cancel" => "cancelled",
        "complete" => "completed",
        _ => "failed",
    }
}

impl std::error::Error for OpsError {}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { execution } => OpsError::NotFound { execution },
            e => OpsError::Store(e),
        }
    }
}

/// An action to apply to each execution a filter selects ([`Operator::bulk`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// [`Operator::redrive`].
    Redrive,
    /// [`Operator::cancel`].
    Cancel,
    /// [`Operator::fail`] with this error.
    Fail(StepError),
}

impl Action {
    /// `"redrive"`, `"cancel"` or `"fail"`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Redrive => "redrive",
            Action::Cancel => "cancel",
            Action::Fail(_) => "fail",
        }
    }
}

/// What a bulk action did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// The executions it changed.
    pub done: Vec<ExecutionId>,
    /// Those it left, and why (one that ended meanwhile, a failure state's redrive).
    pub refused: Vec<(ExecutionId, OpsError)>,
}

/// Acts on stored executions as an operator, recording who did it in each history. Needs only
/// a store: machines' definitions, where an action needs one (an answer checked against the
/// waiting state), are those workers registered ([`Store::register`]).
///
/// ```no_run
/// use fsm_core::{ExecutionStatus, Operator, Store};
/// use fsm_core::store::ListQuery;
///
/// async fn redrive_failed_charges(store: impl Store) -> Result<(), fsm_core::OpsError> {
///     let ops = Operator::new(store, "ops:alice");
///     let filter = ListQuery::new()
///         .machine("Checkout")
///         .status(ExecutionStatus::Errored)
///         .state("Reserved");
///     println!("{} to redrive", ops.count(filter.clone()).await?);
///     let outcome = ops.bulk(fsm_core::Action::Redrive, filter, 100).await?;
///     println!("{} redriven", outcome.done.len());
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub struct Operator<S> {
    store: S,
    who: Arc<str>,
    clock: Clock,
    definitions: Mutex<HashMap<(String, String), &'static Definition>>,
}

impl<S> fmt::Debug for Operator<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

/// How many times an action reads and writes again when a worker's write came between.
const TRIES: usize = 32;

impl<S: Store> Operator<S> {
    /// An operator acting on `store`, named `who` in the histories it writes (`"ops:alice"`,
    /// `"console"`).
    pub fn new(store: S, who: impl Into<String>) -> Self {
        Operator {
            store,
            who: clean(who.into()).into(),
            clock: Clock::new(),
            definitions: Mutex::new(HashMap::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Who this operator is, as histories record it.
    pub fn who(&self) -> &str {
        &self.who
    }

    fn ops(&self) -> Ops<'_, S> {
        Ops {
            store: &self.store,
            who: &self.who,
            clock: &self.clock,
        }
    }

    /// Redrives an execution that ended with an error (a step failed for good with no route,
    /// a wait timed out, its data could not be read) or was cancelled, as Step Functions'
    /// Redrive does: it goes on from the state it stopped in, whose step runs again at once
    /// (in whichever worker claims it) with its attempts counted afresh and a new
    /// idempotency key (a service that remembered the failed attempts' key would answer with
    /// their failure). Its history is kept, with an `execution redriven` event.
    ///
    /// Refused for an execution that ended in a `terminal(failure)` state
    /// ([`OpsError::EndedByMachine`]), succeeded, or has not ended.
    pub async fn redrive(&self, id: ExecutionId) -> Result<(), OpsError> {
        self.ops().redrive(id).await
    }

    /// Cancels an execution that is running or waiting: it ends `cancelled` at once, with an
    /// `execution cancelled` event. A step running in a worker is not interrupted: its
    /// result is discarded (the worker's checkpoint is refused). The task tokens of its wait
    /// no longer answer anything ([`TokenError::Cancelled`](crate::TokenError::Cancelled)).
    pub async fn cancel(&self, id: ExecutionId) -> Result<(), OpsError> {
        self.ops().cancel(id).await
    }

    /// Completes the wait of a waiting execution by hand, without its token: `next` is the
    /// next state as the machine's enum serializes it (`{"Shipped": {"tracking": "1Z9"}}`,
    /// or `"Shipped"` for a state without data), checked against the machine's registered
    /// definition: it must be a state the waiting state leads to. The history records the
    /// answer as given by hand, by this operator.
    ///
    /// (A worker deserializes the data when it takes the execution on; data that does not
    /// deserialize sets the execution aside with [`StepError::BAD_STATE`], to be redriven.
    /// Code that has the machine's types answers with
    /// [`DurableClient::complete_by_hand`](crate::DurableClient::complete_by_hand),
    /// checked by the compiler.)
    pub async fn complete(&self, id: ExecutionId, next: &Value) -> Result<(), OpsError> {
        let row = self.ops().waiting(id, "complete").await?;
        let def = self.definition_of(&row).await?;
        self.ops().complete_checked(&row, def, next).await
    }

    /// Fails the wait of a waiting execution by hand, without its token, with `error`: the
    /// waiting state's retries and catch routes apply, as to a failed step.
    pub async fn fail(&self, id: ExecutionId, error: StepError) -> Result<(), OpsError> {
        self.ops().fail(id, error).await
    }

    /// Completes the wait that handed out `token` with `next`, checked as
    /// [`Operator::complete`] checks it: for a caller that holds the token but not the
    /// machine's code (the command line's `complete --token`). Returns the execution.
    pub async fn complete_with_token(
        &self,
        token: impl AsTaskToken,
        next: &Value,
    ) -> Result<ExecutionId, OpsError> {
        let (token, row) = self.ops().held(token).await?;
        let def = self.definition_of(&row).await?;
        let (transition, _) = answer_transition(def, &row, next)?;
        let result = serde_json::json!({
            "state": next,
            "transition": transition,
            "by": &*self.who,
        });
        self.ops()
            .answer_with(&token, TokenStatus::Completed, result)
            .await
    }

    /// Fails the wait that handed out `token` with `error`. Returns the execution.
    pub async fn fail_with_token(
        &self,
        token: impl AsTaskToken,
        error: StepError,
    ) -> Result<ExecutionId, OpsError> {
        let (token, _) = self.ops().held(token).await?;
        let mut result = codec::error_json(&error);
        result["by"] = Value::from(&*self.who);
        self.ops()
            .answer_with(&token, TokenStatus::Failed, result)
            .await
    }

    /// How many executions `filter` selects (its limit and cursor aside): what a bulk action
    /// over it would look at.
    pub async fn count(&self, filter: ListQuery) -> Result<u64, OpsError> {
        Ok(self.store.count(filter).await?)
    }

    /// Applies `action` to execution `id`.
    pub async fn apply(&self, action: &Action, id: ExecutionId) -> Result<(), OpsError> {
        match action {
            Action::Redrive => self.redrive(id).await,
            Action::Cancel => self.cancel(id).await,
            Action::Fail(error) => self.fail(id, error.clone()).await,
        }
    }

    /// Applies `action` to at most `limit` of the executions `filter` selects, in its order,
    /// each on its own: one refused (it ended meanwhile, say) is reported and the others go
    /// on.
    pub async fn bulk(
        &self,
        action: Action,
        filter: ListQuery,
        limit: usize,
    ) -> Result<BulkOutcome, OpsError> {
        let page = self.store.list(filter.limit(limit)).await?;
        let mut outcome = BulkOutcome::default();
        for e in page.executions {
            match self.apply(&action, e.id).await {
                Ok(()) => outcome.done.push(e.id),
                Err(OpsError::Store(err)) => return Err(OpsError::Store(err)),
                Err(err) => outcome.refused.push((e.id, err)),
            }
        }
        Ok(outcome)
    }

    /// The execution's history, read with the definition it last ran under (as a worker
    /// registered it).
    pub async fn history(&self, row: &ExecutionRecord) -> Result<crate::History, OpsError> {
        let def = self.definition_of(row).await?;
        let stored = self.store.events(row.id).await?;
        let mut history = crate::History::with_capacity(stored.len());
        for e in &stored {
            let event = codec::decode(def, e).map_err(|message| {
                OpsError::Store(StoreError::Corrupt {
                    execution: Some(row.id),
                    message,
                })
            })?;
            history.push(event);
        }
        Ok(history)
    }

    /// The definition `row` last ran under, as a worker registered it.
    pub async fn definition_of(
        &self,
        row: &ExecutionRecord,
    ) -> Result<&'static Definition, OpsError> {
        self.definition(&row.machine, &row.fingerprint).await
    }

    /// The definition of `machine` with `fingerprint`, as a worker registered it (read once,
    /// then kept).
    pub async fn definition(
        &self,
        machine: &str,
        fingerprint: &str,
    ) -> Result<&'static Definition, OpsError> {
        let key = (machine.to_owned(), fingerprint.to_owned());
        if let Some(def) = self.cached(&key) {
            return Ok(def);
        }
        let missing = || OpsError::NoDefinition {
            machine: machine.to_owned(),
            fingerprint: fingerprint.to_owned(),
        };
        let stored = self
            .store
            .definitions(Some(machine))
            .await?
            .into_iter()
            .find(|d| d.fingerprint == fingerprint)
            .ok_or_else(missing)?;
        let def = Definition::from_json(&stored.json).map_err(|message| {
            OpsError::Store(StoreError::Corrupt {
                execution: None,
                message: format!("the definition of `{machine}` {fingerprint}: {message}"),
            })
        })?;
        if def.fingerprint() != fingerprint || def.name != machine {
            return Err(OpsError::Store(StoreError::Corrupt {
                execution: None,
                message: format!(
                    "the definition registered as `{machine}` {fingerprint} is `{}` {}",
                    def.name,
                    def.fingerprint()
                ),
            }));
        }
        let mut cache = self.definitions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(*cache.entry(key).or_insert(def))
    }

    fn cached(&self, key: &(String, String)) -> Option<&'static Definition> {
        let cache = self.definitions.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).copied()
    }
}

/// The actions, on a borrowed store: shared by [`Operator`] and the typed forms on
/// [`DurableClient`](crate::DurableClient).
pub(crate) struct Ops<'s, S> {
    pub(crate) store: &'s S,
    pub(crate) who: &'s str,
    pub(crate) clock: &'s Clock,
}

/// A name as one line of a history.
pub(crate) fn clean(who: String) -> String {
    who.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

impl<S: Store> Ops<'_, S> {
    pub(crate) async fn redrive(&self, id: ExecutionId) -> Result<(), OpsError> {
        let _written = self
            .change(id, |row, now| {
                not_a_branch(row)?;
                match row.status {
                    ExecutionStatus::Errored | ExecutionStatus::Cancelled => {}
                    ExecutionStatus::Failed => {
                        return Err(OpsError::EndedByMachine {
                            execution: id,
                            state: row.state_name.clone(),
                        })
                    }
                    status => {
                        return Err(OpsError::NotApplicable {
                            execution: id,
                            action: "redrive",
                            status,
                        })
                    }
                }
                let mut next = row.clone();
                // Due now, as a retry is: the claim that takes it up is not a resumption.
                next.status = ExecutionStatus::Waiting;
                next.waiting_for = Some(WaitingFor::Retry);
                next.due_at = Some(now);
                next.step = row.step.saturating_add(1);
                next.attempt = 1;
                next.entered_at = now;
                next.error = None;
                let event = self.event(row, "execution redriven", now);
                Ok(released(next, now, vec![event], Vec::new()))
            })
            .await?;
        #[cfg(feature = "metrics")]
        crate::metrics::operated(&_written.machine, "redriven");
        Ok(())
    }

    /// Cancels `id` and the branches it runs (and theirs): its worker's next checkpoint of
    /// any of them is refused.
    pub(crate) async fn cancel(&self, id: ExecutionId) -> Result<(), OpsError> {
        not_a_branch(&self.get(id).await?)?;
        self.cancel_one(id).await?;
        let mut parents = vec![id];
        while let Some(parent) = parents.pop() {
            let query = ListQuery::new().parent(parent).limit(0);
            for branch in self.store.list(query).await?.executions {
                parents.push(branch.id);
                if !branch.status.is_final() {
                    match self.cancel_one(branch.id).await {
                        // It ended meanwhile.
                        Ok(()) | Err(OpsError::NotApplicable { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    async fn cancel_one(&self, id: ExecutionId) -> Result<(), OpsError> {
        for _ in 0..TRIES {
            let row = self.get(id).await?;
            if row.status.is_final() {
                return Err(OpsError::NotApplicable {
                    execution: id,
                    action: "cancel",
                    status: row.status,
                });
            }
            let mut close = Vec::new();
            if let Some(t) = self.store.wait_token(id, row.step, row.attempt).await? {
                if t.status == TokenStatus::Open {
                    close.push((t.secret_hash, TokenStatus::Superseded));
                }
            }
            let now = self.clock.now();
            let mut next = row.clone();
            next.status = ExecutionStatus::Cancelled;
            next.waiting_for = None;
            next.due_at = None;
            let event = self.event(&row, "execution cancelled", now);
            // Refused if a worker wrote meanwhile, or the token was answered: read again.
            match self
                .store
                .amend(released(next, now, vec![event], close))
                .await
            {
                Ok(_) => {
                    #[cfg(feature = "metrics")]
                    crate::metrics::operated(&row.machine, "cancelled");
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpsError::Contended { execution: id })
    }

    /// Completes the wait `row` (as read) is in with `next`, checked against `def`.
    pub(crate) async fn complete_checked(
        &self,
        row: &ExecutionRecord,
        def: &'static Definition,
        next: &Value,
    ) -> Result<(), OpsError> {
        let row = &self.waiting(row.id, "complete").await?;
        let (transition, _) = answer_transition(def, row, next)?;
        self.answer_by_hand(row, TokenStatus::Completed, |by| {
            serde_json::json!({
                "state": next,
                "transition": transition,
                "by": by,
                "by_hand": true,
            })
        })
        .await
    }

    pub(crate) async fn fail(&self, id: ExecutionId, error: StepError) -> Result<(), OpsError> {
        let row = self.waiting(id, "fail").await?;
        self.answer_by_hand(&row, TokenStatus::Failed, |by| {
            let mut result = codec::error_json(&error);
            result["by"] = Value::from(by);
            result["by_hand"] = Value::Bool(true);
            result
        })
        .await
    }

    async fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, OpsError> {
        self.store
            .get(id)
            .await?
            .ok_or(OpsError::NotFound { execution: id })
    }

    /// The execution's row, if it waits for a token.
    pub(crate) async fn waiting(
        &self,
        id: ExecutionId,
        action: &'static str,
    ) -> Result<ExecutionRecord, OpsError> {
        let row = self.get(id).await?;
        if row.status.is_final() {
            return Err(OpsError::NotApplicable {
                execution: id,
                action,
                status: row.status,
            });
        }
        if row.waiting_for != Some(WaitingFor::Token) {
            return Err(OpsError::NotWaiting {
                execution: id,
                status: row.status,
            });
        }
        Ok(row)
    }

    /// Answers the wait `row` is in through its open token, as the token's holder would,
    /// with the result `result` builds from this operator's name.
    async fn answer_by_hand(
        &self,
        row: &ExecutionRecord,
        status: TokenStatus,
        result: impl FnOnce(&str) -> Value,
    ) -> Result<(), OpsError> {
        let id = row.id;
        let token = self
            .store
            .wait_token(id, row.step, row.attempt)
            .await?
            .filter(|t| t.status == TokenStatus::Open)
            .ok_or(OpsError::NotWaiting {
                execution: id,
                status: row.status,
            })?;
        let answered = self
            .store
            .answer_token(TokenAnswer {
                secret_hash: token.secret_hash,
                execution: id,
                status,
                result: result(self.who).to_string(),
                now: self.clock.now(),
            })
            .await?;
        if !answered {
            // Answered, timed out or cancelled meanwhile.
            let now = self.get(id).await?;
            return Err(OpsError::NotWaiting {
                execution: id,
                status: now.status,
            });
        }
        Ok(())
    }

    /// `token`, if it answers the wait its execution is in, with the execution's row.
    async fn held(
        &self,
        token: impl AsTaskToken,
    ) -> Result<(TaskToken, ExecutionRecord), OpsError> {
        let token = token.as_task_token().map_err(OpsError::Token)?;
        let hash = token.secret_hash();
        let record = self
            .store
            .token(&hash)
            .await?
            .filter(|r| {
                crate::runtime::token::same_secret(&r.secret_hash, &hash)
                    && (r.execution, r.step, r.attempt)
                        == (token.execution, token.step, token.attempt)
            })
            .ok_or(OpsError::Token(TokenError::Forged))?;
        let row = self
            .store
            .get(token.execution)
            .await?
            .ok_or(OpsError::Token(TokenError::Forged))?;
        if record.status != TokenStatus::Open
            || row.status.is_final()
            || (row.step, row.attempt) != (token.step, token.attempt)
        {
            return Err(OpsError::Token(refusal(record.status, &row)));
        }
        Ok((token, row))
    }

    /// Answers through `token` with `result`.
    async fn answer_with(
        &self,
        token: &TaskToken,
        status: TokenStatus,
        result: Value,
    ) -> Result<ExecutionId, OpsError> {
        let answered = self
            .store
            .answer_token(TokenAnswer {
                secret_hash: token.secret_hash(),
                execution: token.execution,
                status,
                result: result.to_string(),
                now: self.clock.now(),
            })
            .await?;
        if !answered {
            let (own, row) = (
                self.store.token(&token.secret_hash()).await?,
                self.get(token.execution).await?,
            );
            let own = own.map_or(TokenStatus::Superseded, |t| t.status);
            // Another token of the same wait decided it.
            let own = if own == TokenStatus::Open {
                TokenStatus::Superseded
            } else {
                own
            };
            return Err(OpsError::Token(refusal(own, &row)));
        }
        Ok(token.execution)
    }

    /// An operator's event for `row`, now.
    fn event(
        &self,
        row: &ExecutionRecord,
        kind: &str,
        now: crate::store::Millis,
    ) -> crate::store::StoredEvent {
        codec::row_event(row, kind, serde_json::json!({ "by": self.who }), now)
    }

    /// Reads the execution, lets `decide` make the write (or refuse), and writes it fenced by
    /// the version read; reads and decides again when another write came between.
    async fn change(
        &self,
        id: ExecutionId,
        decide: impl Fn(&ExecutionRecord, crate::store::Millis) -> Result<Checkpoint, OpsError>,
    ) -> Result<ExecutionRecord, OpsError> {
        for _ in 0..TRIES {
            let row = self.get(id).await?;
            let change = decide(&row, self.clock.now())?;
            let written = change.record.clone();
            match self.store.amend(change).await {
                Ok(_) => return Ok(written),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpsError::Contended { execution: id })
    }
}

/// The write of `next` at `now`, with `events` appended and `close_tokens` closed, let go
/// of by any worker that held it: an operator's change, or a worker's setting aside.
pub(crate) fn released(
    mut next: ExecutionRecord,
    now: crate::store::Millis,
    events: Vec<crate::store::StoredEvent>,
    close_tokens: Vec<(String, TokenStatus)>,
) -> Checkpoint {
    next.events += events.len() as u32;
    next.updated_at = now;
    next.lease_owner = None;
    next.lease_expires = None;
    Checkpoint {
        record: next,
        events,
        new_token: None,
        close_tokens,
    }
}

/// Refuses an operator's action on a branch: its parent drives it.
fn not_a_branch(row: &ExecutionRecord) -> Result<(), OpsError> {
    match row.parent {
        Some(parent) => Err(OpsError::Branch {
            execution: row.id,
            parent,
        }),
        None => Ok(()),
    }
}

/// Why a token whose record says `status` does not answer `row`'s wait.
fn refusal(status: TokenStatus, row: &ExecutionRecord) -> TokenError {
    if row.status == ExecutionStatus::Cancelled {
        return TokenError::Cancelled;
    }
    match status {
        TokenStatus::Completed | TokenStatus::Failed => TokenError::AlreadyUsed,
        TokenStatus::TimedOut => TokenError::TimedOut,
        TokenStatus::Open | TokenStatus::Superseded => TokenError::Stale,
    }
}

/// The transition an answer `next` to `row`'s wait takes, and the next state's name: `next`
/// must be the machine's enum as serde writes it (`{"State": data}` or `"State"`), in a state
/// the waiting state leads to through an event.
pub(crate) fn answer_transition(
    def: &'static Definition,
    row: &ExecutionRecord,
    next: &Value,
) -> Result<(usize, &'static str), OpsError> {
    let bad = |message: String| OpsError::BadAnswer {
        execution: row.id,
        message,
    };
    let name = match next {
        Value::String(name) => name.as_str(),
        Value::Object(map) if map.len() == 1 => map.keys().next().map_or("", String::as_str),
        _ => {
            return Err(bad(format!(
                "the answer is the next state as {{\"State\": data}} or \"State\", not {next}"
            )))
        }
    };
    let from = def
        .state_index(&row.state_name)
        .ok_or_else(|| bad(format!("`{}` has no state `{}`", def.name, row.state_name)))?;
    let targets: Vec<&str> = def
        .transitions_from(from)
        .filter(|t| !t.catch)
        .map(|t| def.states[t.to].name)
        .collect();
    let found = def
        .transitions
        .iter()
        .enumerate()
        .find(|(_, t)| t.from == from && !t.catch && def.states[t.to].name == name);
    match found {
        Some((i, t)) => Ok((i, def.states[t.to].name)),
        None => Err(bad(format!(
            "`{}` leads to {}, not to `{name}`",
            row.state_name,
            targets
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}
