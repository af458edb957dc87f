//! Layer 3: what reads and answers durable executions without running them. [`Client`] is
//! shared by the worker ([`DurableExecutor`](crate::DurableExecutor)) and by
//! [`DurableClient`], for a process that starts executions and answers their tokens but runs
//! no steps (an API server, a webhook).

use core::marker::PhantomData;
use core::time::Duration;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::durable::ops::Ops;
use crate::durable::store::codec;
use crate::durable::store::{
    Created, ExecutionRecord, ExecutionStatus, ExecutionSummary, ListQuery, Millis, NewExecution,
    Page, Store, StoreError, TokenAnswer, TokenStatus,
};
use crate::{
    DurableError, EventKind, ExecutionId, Fsm, History, HistoryEvent, StepError, TaskToken,
    TokenError,
};

/// Wall-clock milliseconds, advanced by tokio's clock (so that a test on tokio's paused clock
/// sees due times come as the clock moves).
pub(crate) struct Clock {
    wall: Millis,
    at: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            wall: crate::runtime::step::unix_millis(),
            at: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Millis {
        self.wall + self.at.elapsed().as_millis() as Millis
    }

    /// The instant of wall-clock time `t`.
    pub(crate) fn instant(&self, t: Millis) -> Instant {
        if t >= self.wall {
            self.at + Duration::from_millis(t - self.wall)
        } else {
            self.at
                .checked_sub(Duration::from_millis(self.wall - t))
                .unwrap_or(self.at)
        }
    }
}

/// What a named start does when the machine already has an execution of that name (Temporal's
/// workflow-id conflict policy; Step Functions' execution names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IfNameTaken {
    /// Return the existing execution, whatever it was started with and wherever it stands
    /// ([`Started::created`] is `false`): a start retried after a crash or a timeout (an HTTP
    /// handler behind a load balancer) starts nothing twice. The default.
    #[default]
    UseExisting,
    /// Refuse with [`DurableError::NameTaken`], naming the execution that has it.
    Fail,
}

/// How to start an execution: under a name or not, and what a taken name does.
///
/// ```
/// use fsm_core::{IfNameTaken, StartOptions};
///
/// let once = StartOptions::named("order-9").if_name_taken(IfNameTaken::Fail);
/// # let _ = once;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartOptions {
    /// The execution's name, unique among the machine's executions in the store: an order
    /// number, a request's idempotency key. 1 to 256 bytes, no control characters.
    pub name: Option<String>,
    /// What happens when the name is taken.
    pub if_name_taken: IfNameTaken,
}

impl StartOptions {
    /// An execution named `name`, returning the existing one if the name is taken.
    pub fn named(name: impl Into<String>) -> Self {
        StartOptions {
            name: Some(name.into()),
            if_name_taken: IfNameTaken::UseExisting,
        }
    }

    /// What a taken name does.
    pub fn if_name_taken(mut self, policy: IfNameTaken) -> Self {
        self.if_name_taken = policy;
        self
    }
}

/// What a named start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The execution of that name.
    pub id: ExecutionId,
    /// Whether this start created it (else it existed, and was left as it was).
    pub created: bool,
}

/// The longest name an execution may have, in bytes.
const MAX_NAME: usize = 256;

/// Checks a start's name.
fn check_name(name: &str) -> Result<(), DurableError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME {
        "it is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "it has a control character"
    } else {
        return Ok(());
    };
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push_str("...");
    }
    Err(DurableError::BadName {
        name: shown,
        reason,
    })
}

/// The store and what reading it needs: the machine's fingerprint, the clock.
pub(crate) struct Client<M, S> {
    pub(crate) store: S,
    pub(crate) fingerprint: String,
    pub(crate) clock: Clock,
    /// Whether starts are counted in metrics (`fsm_executions_started_total`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics: core::sync::atomic::AtomicBool,
    machine: PhantomData<fn() -> M>,
}

impl<M, S> Client<M, S>
where
    M: Fsm + Serialize + DeserializeOwned,
    S: Store,
{
    pub(crate) fn new(store: S) -> Self {
        Client {
            store,
            fingerprint: M::DEFINITION.fingerprint(),
            clock: Clock::new(),
            metrics: core::sync::atomic::AtomicBool::new(false),
            machine: PhantomData,
        }
    }

    /// Writes a new execution in `state`, claimed by `owner` until `lease_until` if given
    /// (a worker that runs it at once), else due now for any worker. Returns its row, and
    /// whether it was written (a named start finds the name's execution, if there is one).
    pub(crate) async fn create(
        &self,
        state: &M,
        owner: Option<(String, Millis)>,
        options: &StartOptions,
    ) -> Result<(ExecutionRecord, bool), DurableError> {
        if let Some(name) = &options.name {
            check_name(name)?;
        }
        let json = serde_json::to_string(state).map_err(|e| DurableError::Serialize {
            execution: None,
            message: e.to_string(),
        })?;
        let id = crate::runtime::step::new_id(crate::runtime::random::random_u128());
        let now = self.clock.now();
        let started = HistoryEvent {
            at: Duration::ZERO,
            kind: EventKind::ExecutionStarted {
                state: state.state_name(),
            },
        };
        let (lease_owner, lease_expires) = owner.unzip();
        let record = ExecutionRecord {
            id,
            name: options.name.clone(),
            // A worker that runs it at once took it up.
            claims: u32::from(lease_owner.is_some()),
            machine: M::DEFINITION.name.to_owned(),
            fingerprint: self.fingerprint.clone(),
            state_name: state.state_name().to_owned(),
            state: json,
            status: ExecutionStatus::Running,
            waiting_for: None,
            step: 0,
            attempt: 1,
            entered_at: now,
            due_at: Some(now),
            error: None,
            events: 1,
            created_at: now,
            updated_at: now,
            lease_owner,
            lease_expires,
            version: 1,
            parent: None,
        };
        let created = self
            .store
            .create(NewExecution {
                record: record.clone(),
                events: vec![codec::encode(&started, 0)],
                token: None,
            })
            .await?;
        match created {
            Created::New => {
                #[cfg(feature = "metrics")]
                if self.metrics.load(core::sync::atomic::Ordering::Relaxed) {
                    crate::metrics::started(&record.machine);
                }
                Ok((record, true))
            }
            Created::Existing(existing) => match options.if_name_taken {
                IfNameTaken::UseExisting => Ok((*existing, false)),
                IfNameTaken::Fail => Err(DurableError::NameTaken {
                    name: options.name.clone().unwrap_or_default(),
                    execution: existing.id,
                }),
            },
        }
    }

    pub(crate) async fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, DurableError> {
        self.store
            .get(id)
            .await?
            .ok_or(DurableError::NotFound { execution: id })
    }

    pub(crate) async fn state(&self, id: ExecutionId) -> Result<M, DurableError> {
        let row = self.get(id).await?;
        self.decode(&row)
    }

    pub(crate) async fn history(&self, id: ExecutionId) -> Result<History, DurableError> {
        let rows = self.store.events(id).await?;
        let mut history = History::with_capacity(rows.len());
        for row in &rows {
            let event =
                codec::decode(M::DEFINITION, row).map_err(|message| DurableError::BadState {
                    execution: id,
                    message,
                })?;
            history.push(event);
        }
        Ok(history)
    }

    pub(crate) async fn list(&self, query: ListQuery) -> Result<Page, DurableError> {
        Ok(self.store.list(query.machine(M::DEFINITION.name)).await?)
    }

    pub(crate) async fn lookup(
        &self,
        name: &str,
    ) -> Result<Option<ExecutionSummary>, DurableError> {
        let query = ListQuery::new().name(name).limit(1);
        Ok(self.list(query).await?.executions.pop())
    }

    /// The execution's row once it has ended, `Ok(None)` while it has not; an error for a
    /// row of another machine.
    pub(crate) async fn ended(
        &self,
        id: ExecutionId,
    ) -> Result<Option<ExecutionRecord>, DurableError> {
        let row = self.get(id).await?;
        if row.machine != M::DEFINITION.name {
            return Err(DurableError::WrongMachine {
                execution: id,
                found: row.machine,
            });
        }
        // Set aside: its data could not be read.
        let bad = format!("{}: ", StepError::BAD_STATE);
        if row.status == ExecutionStatus::Errored {
            if let Some(message) = row.error.as_deref().and_then(|e| e.strip_prefix(&bad)) {
                return Err(DurableError::BadState {
                    execution: id,
                    message: message.to_owned(),
                });
            }
        }
        Ok(row.status.is_final().then_some(row))
    }

    /// The machine's value stored in `row`.
    pub(crate) fn decode(&self, row: &ExecutionRecord) -> Result<M, DurableError> {
        let def = M::DEFINITION;
        let execution = row.id;
        if row.machine != def.name {
            return Err(DurableError::WrongMachine {
                execution,
                found: row.machine.clone(),
            });
        }
        let changed = if row.fingerprint == self.fingerprint {
            String::new()
        } else {
            format!(
                " (the definition changed since it last ran: fingerprint {} is now {})",
                row.fingerprint, self.fingerprint
            )
        };
        if def.state_index(&row.state_name).is_none() {
            return Err(DurableError::BadState {
                execution,
                message: format!("`{}` has no state `{}`{changed}", def.name, row.state_name),
            });
        }
        let state: M = serde_json::from_str(&row.state).map_err(|e| DurableError::BadState {
            execution,
            message: format!(
                "its `{}` data does not deserialize: {e}{changed}",
                row.state_name
            ),
        })?;
        if state.state_name() != row.state_name {
            return Err(DurableError::BadState {
                execution,
                message: format!(
                    "the row says `{}` but its data is `{}`",
                    row.state_name,
                    state.state_name()
                ),
            });
        }
        Ok(state)
    }

    pub(crate) async fn complete<W, N>(
        &self,
        token: impl crate::AsTaskToken,
        by: Option<&str>,
        complete: impl FnOnce(W::Typed) -> N,
    ) -> Result<ExecutionId, TokenError>
    where
        W: crate::Waiting<M>,
        N: Into<W::Next>,
    {
        let (token, row) = self
            .open_token(token.as_task_token()?, Some(W::NAME))
            .await?;
        let state = self
            .decode(&row)
            .map_err(|e| TokenError::Execution(e.to_string()))?;
        let typed = W::typed(state).map_err(|e| TokenError::WrongState {
            expected: W::NAME,
            waiting: e.found().to_owned(),
        })?;
        let (next, transition) = W::leave(complete(typed).into());
        let next = serde_json::to_value(&next).map_err(|e| {
            TokenError::Execution(format!(
                "execution {}: the next state cannot be stored: {e}",
                token.execution()
            ))
        })?;
        let result = serde_json::json!({ "state": next, "transition": transition, "by": by });
        self.answer(token, TokenStatus::Completed, result.to_string())
            .await
    }

    pub(crate) async fn fail(
        &self,
        token: impl crate::AsTaskToken,
        by: Option<&str>,
        error: StepError,
    ) -> Result<ExecutionId, TokenError> {
        let (token, _) = self.open_token(token.as_task_token()?, None).await?;
        let mut result = codec::error_json(&error);
        result["by"] = serde_json::json!(by);
        let result = result.to_string();
        self.answer(token, TokenStatus::Failed, result).await
    }

    /// `token`, if it is open, with its execution's row.
    async fn open_token(
        &self,
        token: TaskToken,
        expected: Option<&'static str>,
    ) -> Result<(TaskToken, ExecutionRecord), TokenError> {
        let store = &self.store;
        let failed = token_store_error;
        let hash = token.secret_hash();
        let record = store
            .token(&hash)
            .await
            .map_err(failed)?
            .filter(|r| {
                crate::runtime::token::same_secret(&r.secret_hash, &hash)
                    && (r.execution, r.step, r.attempt)
                        == (token.execution, token.step, token.attempt)
            })
            .ok_or(TokenError::Forged)?;
        if token_open(record.status).is_err() {
            return Err(self.refused(&token).await);
        }
        let row = store
            .get(token.execution)
            .await
            .map_err(failed)?
            .ok_or(TokenError::Forged)?;
        if (row.step, row.attempt) != (token.step, token.attempt) || row.status.is_final() {
            // Answered by someone else between the two reads, or truly left behind.
            return Err(self.refused(&token).await);
        }
        if let Some(expected) = expected {
            if row.state_name != expected {
                return Err(TokenError::WrongState {
                    expected,
                    waiting: row.state_name,
                });
            }
        }
        Ok((token, row))
    }

    async fn answer(
        &self,
        token: TaskToken,
        status: TokenStatus,
        result: String,
    ) -> Result<ExecutionId, TokenError> {
        let store = &self.store;
        let failed = token_store_error;
        let answered = store
            .answer_token(TokenAnswer {
                secret_hash: token.secret_hash(),
                execution: token.execution,
                status,
                result,
                now: self.clock.now(),
            })
            .await
            .map_err(failed)?;
        if !answered {
            // Answered, timed out or left behind meanwhile.
            return Err(self.refused(&token).await);
        }
        Ok(token.execution)
    }

    /// Why `token` cannot answer its wait: what became of it, or of the wait through another
    /// of its tokens (a step run again after a crash hands out a new one, and the first
    /// answer or close through any of them decides), or the execution moved on.
    async fn refused(&self, token: &TaskToken) -> TokenError {
        let store = &self.store;
        if let Ok(Some(row)) = store.get(token.execution).await {
            if row.status == ExecutionStatus::Cancelled {
                return TokenError::Cancelled;
            }
        }
        let own = match store.token(&token.secret_hash()).await {
            Ok(own) => own,
            Err(e) => return token_store_error(e),
        };
        if let Err(e) = token_open(own.map_or(TokenStatus::Superseded, |r| r.status)) {
            return e;
        }
        match store
            .wait_token(token.execution, token.step, token.attempt)
            .await
        {
            Ok(Some(decided)) => token_open(decided.status)
                .err()
                .unwrap_or(TokenError::Stale),
            Ok(None) => TokenError::Stale,
            Err(e) => token_store_error(e),
        }
    }
}

fn token_open(status: TokenStatus) -> Result<(), TokenError> {
    match status {
        TokenStatus::Open => Ok(()),
        TokenStatus::Completed | TokenStatus::Failed => Err(TokenError::AlreadyUsed),
        TokenStatus::TimedOut => Err(TokenError::TimedOut),
        TokenStatus::Superseded => Err(TokenError::Stale),
    }
}

/// A store's error met while answering a token.
fn token_store_error(e: StoreError) -> TokenError {
    match e {
        StoreError::Unavailable { message } => TokenError::Unavailable(message),
        e => TokenError::Execution(e.to_string()),
    }
}

/// Returns when `ended` (a store's [`Store::ended`]) next changes; never, if the store tells
/// nothing or is gone.
pub(crate) async fn next_end(ended: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let changed = match ended {
        Some(ended) => ended.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// Starts, reads and answers durable executions of machine `M` on store `S`, and runs none:
/// for a process that is not a worker (an API server, a webhook that completes task tokens).
/// It needs no step handlers and starts no task; workers
/// ([`ExecutorBuilder::durable`](crate::ExecutorBuilder::durable)) on the same store run
/// what it starts, in any process: on PostgreSQL they are woken by `NOTIFY`; on SQLite the
/// client's process opens the file with `SqliteStore::open_client` (feature `sqlite`) beside
/// the worker's, which notices what it writes within 20 ms.
///
/// Cheap to clone.
///
/// ```no_run
/// use fsm_core::{DurableClient, DurableError, Fsm, Store};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Fsm, Clone, Serialize, Deserialize)]
/// enum Order {
///     #[fsm(initial, on(pay => Paid))]
///     Placed { id: u32 },
///     #[fsm(terminal)]
///     Paid { id: u32 },
/// }
///
/// // `store`: a `PgStore` that workers share, say.
/// async fn place(store: impl Store) -> Result<(), DurableError> {
///     let client = DurableClient::<Order, _>::new(store);
///     let id = client.start(Order::Placed { id: 7 }).await?;
///     println!("{}", client.finished(id).await?.status);
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub struct DurableClient<M, S> {
    inner: Arc<Client<M, S>>,
    /// Who answers waits through this client, as histories record it.
    caller: Option<Arc<str>>,
}

impl<M, S> Clone for DurableClient<M, S> {
    fn clone(&self) -> Self {
        DurableClient {
            inner: Arc::clone(&self.inner),
            caller: self.caller.clone(),
        }
    }
}

impl<M, S> core::fmt::Debug for DurableClient<M, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DurableClient").finish_non_exhaustive()
    }
}

impl<M, S> DurableClient<M, S>
where
    M: Fsm + Serialize + DeserializeOwned,
    S: Store,
{
    /// A client of the executions of `M` in `store`.
    pub fn new(store: S) -> Self {
        DurableClient {
            inner: Arc::new(Client::new(store)),
            caller: None,
        }
    }

    /// This client, answering waits as `who` (`"carrier-webhook"`, `"ops:alice"`): each
    /// history records who completed or failed its wait ("wait completed ... answered by
    /// carrier-webhook"). Shares the store with `self`.
    pub fn answering_as(&self, who: impl Into<String>) -> Self {
        DurableClient {
            inner: Arc::clone(&self.inner),
            // One line in a history's table, whatever the caller's text holds.
            caller: Some(crate::durable::ops::clean(who.into()).into()),
        }
    }

    /// Counts the executions this client (and its clones) starts in
    /// `fsm_executions_started_total` (feature `metrics`), as a worker built with
    /// `ExecutorBuilder::metrics` counts its own.
    #[cfg(feature = "metrics")]
    pub fn metrics(self) -> Self {
        self.inner
            .metrics
            .store(true, core::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Starts an execution from `start` (normally the machine's initial state): commits it,
    /// due now, for a worker to claim, and returns its id.
    pub async fn start(&self, start: impl Into<M>) -> Result<ExecutionId, DurableError> {
        let options = StartOptions::default();
        Ok(self.inner.create(&start.into(), None, &options).await?.0.id)
    }

    /// Starts an execution named `name` (an order number, a request's idempotency key), or,
    /// if the machine has one of that name, returns it (`created: false`) and starts
    /// nothing: a start retried after a crash or a timeout starts one execution, however
    /// many processes retry it at once.
    pub async fn start_named(
        &self,
        name: impl Into<String>,
        start: impl Into<M>,
    ) -> Result<Started, DurableError> {
        self.start_with(StartOptions::named(name), start).await
    }

    /// Starts an execution as `options` say.
    pub async fn start_with(
        &self,
        options: StartOptions,
        start: impl Into<M>,
    ) -> Result<Started, DurableError> {
        let (row, created) = self.inner.create(&start.into(), None, &options).await?;
        Ok(Started {
            id: row.id,
            created,
        })
    }

    /// The execution named `name`, if the machine has one: its summary (status, state,
    /// times); its data through [`DurableClient::state`].
    pub async fn lookup(&self, name: &str) -> Result<Option<ExecutionSummary>, DurableError> {
        self.inner.lookup(name).await
    }

    /// The execution's row: status, state (as JSON), attempt, due time, lease...
    pub async fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, DurableError> {
        self.inner.get(id).await
    }

    /// The execution's current state, as the machine's enum.
    pub async fn state(&self, id: ExecutionId) -> Result<M, DurableError> {
        self.inner.state(id).await
    }

    /// The execution's history, read back from the store.
    pub async fn history(&self, id: ExecutionId) -> Result<History, DurableError> {
        self.inner.history(id).await
    }

    /// A page of this machine's executions that `query` selects (by status, state, name,
    /// start time), as summaries; [`Page::next`] continues it.
    pub async fn list(&self, query: ListQuery) -> Result<Page, DurableError> {
        self.inner.list(query).await
    }

    /// Waits until the execution has ended, and returns its row. It looks again whenever
    /// the store says an execution ended ([`Store::ended`]: on SQLite and PostgreSQL, at once,
    /// whichever process ended it), and at least every second.
    pub async fn finished(&self, id: ExecutionId) -> Result<ExecutionRecord, DurableError> {
        let mut ended = self.inner.store.ended();
        loop {
            if let Some(row) = self.inner.ended(id).await? {
                return Ok(row);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), next_end(&mut ended)).await;
        }
    }

    /// Completes the wait that handed out `token`, as
    /// [`DurableExecutor::complete`](crate::DurableExecutor::complete) does: typed by the
    /// waiting state, committed before this returns; a worker takes the execution on.
    pub async fn complete<W, N>(
        &self,
        token: impl crate::AsTaskToken,
        complete: impl FnOnce(W::Typed) -> N,
    ) -> Result<ExecutionId, TokenError>
    where
        W: crate::Waiting<M>,
        N: Into<W::Next>,
    {
        let by = self.caller.as_deref();
        self.inner.complete::<W, N>(token, by, complete).await
    }

    /// Fails the wait that handed out `token` with `error`, as
    /// [`DurableExecutor::fail`](crate::DurableExecutor::fail) does.
    pub async fn fail(
        &self,
        token: impl crate::AsTaskToken,
        error: StepError,
    ) -> Result<ExecutionId, TokenError> {
        self.inner.fail(token, self.caller.as_deref(), error).await
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// An operator on this client's store, named as this client answers
    /// ([`DurableClient::answering_as`]), else `"client"`.
    fn operator(&self) -> Ops<'_, S> {
        Ops {
            store: &self.inner.store,
            who: self.caller.as_deref().unwrap_or("client"),
            clock: &self.inner.clock,
        }
    }

    /// Redrives an execution that ended with an error or was cancelled (see
    /// [`Operator::redrive`](crate::Operator::redrive)).
    pub async fn redrive(&self, id: ExecutionId) -> Result<(), crate::OpsError> {
        self.operator().redrive(id).await
    }

    /// Cancels a running or waiting execution (see
    /// [`Operator::cancel`](crate::Operator::cancel)).
    pub async fn cancel(&self, id: ExecutionId) -> Result<(), crate::OpsError> {
        self.operator().cancel(id).await
    }

    /// Completes the wait of execution `id`, waiting in state `W`, by hand, without its
    /// token: typed as [`DurableClient::complete`] is (the closure gets the waiting state's
    /// data and returns one of its next states), recorded in the history as answered by hand
    /// by this client ([`DurableClient::answering_as`]).
    pub async fn complete_by_hand<W, N>(
        &self,
        id: ExecutionId,
        complete: impl FnOnce(W::Typed) -> N,
    ) -> Result<(), crate::OpsError>
    where
        W: crate::Waiting<M>,
        N: Into<W::Next>,
    {
        let row = self.inner.get(id).await.map_err(|e| match e {
            DurableError::NotFound { execution } => crate::OpsError::NotFound { execution },
            e => crate::OpsError::BadAnswer {
                execution: id,
                message: e.to_string(),
            },
        })?;
        let bad = |message: String| crate::OpsError::BadAnswer {
            execution: id,
            message,
        };
        let state = self.inner.decode(&row).map_err(|e| bad(e.to_string()))?;
        let typed = W::typed(state).map_err(|e| {
            bad(format!(
                "it is in `{}`, not waiting in `{}`",
                e.found(),
                W::NAME
            ))
        })?;
        let (next, _) = W::leave(complete(typed).into());
        let next = serde_json::to_value(&next)
            .map_err(|e| bad(format!("the next state cannot be stored: {e}")))?;
        self.operator()
            .complete_checked(&row, M::DEFINITION, &next)
            .await
    }

    /// Fails the wait of execution `id` by hand, without its token, with `error` (see
    /// [`Operator::fail`](crate::Operator::fail)).
    pub async fn fail_by_hand(
        &self,
        id: ExecutionId,
        error: StepError,
    ) -> Result<(), crate::OpsError> {
        self.operator().fail(id, error).await
    }
}
