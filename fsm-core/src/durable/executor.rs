//! Layer 3: durable executions. The same machine and the same `Steps` as the in-memory
//! executor, with every transition checkpointed to a [`Store`] before the next step begins.
//!
//! An execution is a row in the store. A worker (this executor) claims rows that are due,
//! drives each through the generated step loop one step at a time (the driver pauses before
//! every step but the first of a run, and the executor checkpoints the state it paused in),
//! and lets go of the row when the execution ends or waits: for a retry's due time, or for a
//! task token. A scheduler task claims rows as they become due, so an execution that waits
//! holds no task and no memory.

use core::time::Duration;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::durable::branches::StoreChildren;
use crate::durable::client::{next_end, Client, StartOptions, Started};
use crate::durable::error::DurableError;
use crate::durable::store::codec;
use crate::durable::store::{
    Checkpoint, ExecutionRecord, ExecutionStatus, ExecutionSummary, ListQuery, Millis, Page, Store,
    StoreError, TokenRecord, TokenStatus, WaitingFor,
};
use crate::runtime::driver::{Cloned, Cold, Deadline, Driver, Guard};
use crate::runtime::executor::{
    after_failure, stopped, AfterFailure, Core, ExecutorBuilder, Stopped,
};
use crate::runtime::fan_out::{fans_out, BranchData};
use crate::runtime::random::JitterSource;
use crate::runtime::recorder::Recorder;
use crate::{
    Dispatch, EventKind, ExecutionId, History, HistoryEvent, Status, StepError, TaskToken,
    TokenError,
};

/// An execution the executor set aside, and why ([`DurableExecutor::problems`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The execution, when the problem is one execution's (not the store's as a whole).
    pub execution: Option<ExecutionId>,
    /// What went wrong.
    pub error: DurableError,
}

/// Settings of a [`DurableExecutor`] beyond those of [`ExecutorBuilder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DurableOptions {
    /// The most executions this worker drives at once (default 10,000). Executions started
    /// here run at once; those claimed from the store wait for room.
    pub max_in_flight: usize,
    /// Retries due sooner than this wait in memory, holding their execution (the due time is
    /// stored all the same, so a crash loses nothing); later ones leave memory and are claimed
    /// again when due. Default 1 s.
    pub hold_retries_under: Duration,
    /// The most executions claimed in one round (default 512).
    pub claim_batch: usize,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            max_in_flight: 10_000,
            hold_retries_under: Duration::from_secs(1),
            claim_batch: 512,
        }
    }
}

struct Durable<M, H, S> {
    core: Core<H>,
    /// The store, and reading it.
    client: Client<M, S>,
    /// This worker's name in leases.
    owner: String,
    options: DurableOptions,
    /// Wakes the scheduler: new due work, or room for it.
    wake: Arc<Notify>,
    /// Told whenever an execution ends or is set aside.
    ended: Notify,
    /// Executions in flight, and who to tell when there are none.
    flight: Arc<Flight>,
    closing: Arc<AtomicBool>,
    problems: Mutex<Vec<Problem>>,
    /// The scheduler's task, which `shutdown` waits for.
    scheduler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<M, H, S> Drop for Durable<M, H, S> {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Runs executions of machine `M` with the step handlers `H`, durably, on store `S`: built
/// by [`ExecutorBuilder::durable`].
///
/// Every transition is committed to the store before the next step begins; a process that
/// opens the same store later resumes every execution that was running, from its last
/// checkpoint. Retries are due times in the store, and waiting states wait for their task
/// token there: neither holds memory. See the README's "Durable executions".
///
/// Cheap to clone: clones share the worker.
pub struct DurableExecutor<M, H, S> {
    inner: Arc<Durable<M, H, S>>,
}

impl<M, H, S> Clone for DurableExecutor<M, H, S> {
    fn clone(&self) -> Self {
        DurableExecutor {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M, H> ExecutorBuilder<M, H>
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
{
    /// A durable executor on `store`, with the default [`DurableOptions`]. Must be called
    /// inside a tokio runtime: it starts the worker's scheduler, which at once resumes the
    /// executions that were running in the store, and claims the ones that become due.
    ///
    /// Durable executions always record their history (it is stored); `record_history` is
    /// ignored.
    pub fn durable<S: Store>(self, store: S) -> Result<DurableExecutor<M, H, S>, DurableError> {
        self.durable_with(store, DurableOptions::default())
    }

    /// A durable executor on `store`, with `options`.
    pub fn durable_with<S: Store>(
        self,
        store: S,
        options: DurableOptions,
    ) -> Result<DurableExecutor<M, H, S>, DurableError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DurableError::NoRuntime)?;
        let mut core = self.core();
        core.record_history = true;
        let owner = crate::runtime::step::new_id(crate::runtime::random::random_u128()).to_string();
        let leases = store.lease().is_some();
        let client = Client::new(store);
        client
            .metrics
            .store(core.metrics, core::sync::atomic::Ordering::Relaxed);
        let inner = Arc::new(Durable {
            core,
            client,
            owner,
            options,
            wake: Arc::new(Notify::new()),
            ended: Notify::new(),
            flight: Arc::new(Flight {
                in_flight: AtomicUsize::new(0),
                claiming: AtomicBool::new(false),
                idle: Notify::new(),
                leased: leases.then(|| Mutex::new(HashSet::new())),
            }),
            closing: Arc::new(AtomicBool::new(false)),
            problems: Mutex::new(Vec::new()),
            scheduler: Mutex::new(None),
        });
        let scheduler = schedule(
            Arc::downgrade(&inner),
            Arc::clone(&inner.wake),
            Arc::clone(&inner.closing),
        );
        let scheduler = runtime.spawn(scheduler);
        *inner.scheduler.lock().unwrap_or_else(|e| e.into_inner()) = Some(scheduler);
        if let Some(lease) = inner.client.store.lease() {
            runtime.spawn(renew(Arc::downgrade(&inner), lease));
        }
        if let Some(mut work) = inner.client.store.work() {
            let (wake, closing) = (Arc::clone(&inner.wake), Arc::clone(&inner.closing));
            runtime.spawn(async move {
                while work.changed().await.is_ok() && !closing.load(Ordering::SeqCst) {
                    wake.notify_one();
                }
            });
        }
        Ok(DurableExecutor { inner })
    }
}

/// The scheduler: claims due executions while there is room, then sleeps until the next due
/// time or until woken. It holds the executor only while it works, and ends when the
/// executor is dropped or shut down.
async fn schedule<M, H, S>(
    weak: Weak<Durable<M, H, S>>,
    wake: Arc<Notify>,
    closing: Arc<AtomicBool>,
) where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
    S: Store,
{
    let machine = M::DEFINITION.name;
    // The definition, for tools that read the store without the machine's code.
    if let Some(this) = weak.upgrade() {
        let definition = crate::store::StoredDefinition {
            machine: machine.to_owned(),
            fingerprint: this.client.fingerprint.clone(),
            json: M::DEFINITION.to_json(),
            registered_at: this.client.clock.now(),
        };
        if let Err(e) = this.client.store.register(definition).await {
            this.problem(None, e.into());
        }
    }
    // Claims that expire: other processes work on the store too.
    let shared = weak
        .upgrade()
        .is_some_and(|this| this.client.store.lease().is_some());
    loop {
        let notified = wake.notified();
        let mut notified = core::pin::pin!(notified);
        notified.as_mut().enable();
        if closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(this) = weak.upgrade() else { return };
        let room = this
            .options
            .max_in_flight
            .saturating_sub(this.flight.in_flight.load(Ordering::SeqCst));
        let mut sleep_until = None;
        if room > 0 {
            let limit = room.min(this.options.claim_batch.max(1));
            let now = this.client.clock.now();
            let claiming = Claiming::new(&this.flight);
            let claimed = this
                .client
                .store
                .claim(machine, &this.owner, now, this.lease_until(now), limit)
                .await;
            match claimed {
                Ok(rows) => {
                    let full = rows.len() == limit;
                    for row in rows {
                        match row {
                            Ok(row) => {
                                #[cfg(feature = "metrics")]
                                if this.core.metrics {
                                    let due = row.due_at.unwrap_or(now);
                                    let waited = now.saturating_sub(due) as f64 / 1000.0;
                                    crate::metrics::schedule_to_start(machine, waited);
                                }
                                this.spawn(row, None)
                            }
                            // Claimed, so set aside while the claim holds; reported once.
                            Err(e) => {
                                let execution = match &e {
                                    StoreError::Corrupt { execution, .. } => *execution,
                                    _ => None,
                                };
                                this.problem(execution, e.into());
                            }
                        }
                    }
                    drop(claiming);
                    if full {
                        continue;
                    }
                    match this.client.store.next_due(machine).await {
                        Ok(next) => sleep_until = next.map(|t| this.client.clock.instant(t)),
                        Err(e) => {
                            this.problem(None, e.into());
                            sleep_until = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                Err(e) => {
                    this.problem(None, e.into());
                    sleep_until = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        // Where other processes write too, look again at least every second: a notification
        // can pass between two looks.
        if shared {
            let poll = Instant::now() + Duration::from_secs(1);
            sleep_until = Some(sleep_until.map_or(poll, |at| at.min(poll)));
        }
        drop(this);
        match sleep_until {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, notified).await;
            }
            None => notified.await,
        }
    }
}

/// Renews this worker's claims every third of a lease, while the executor lives.
async fn renew<M, H, S>(weak: Weak<Durable<M, H, S>>, lease: Duration)
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
    S: Store,
{
    let mut pause = lease / 3;
    loop {
        tokio::time::sleep(pause).await;
        let Some(this) = weak.upgrade() else { return };
        if this.closing.load(Ordering::SeqCst) && this.flight.in_flight.load(Ordering::SeqCst) == 0
        {
            return;
        }
        let until = this.lease_until(this.client.clock.now());
        let driving: Vec<ExecutionId> = this
            .flight
            .leased()
            .map(|leased| leased.iter().copied().collect())
            .unwrap_or_default();
        // A failure (the database is away) is tried again soon; a claim that runs out
        // meanwhile is another worker's to take.
        pause = match this.client.store.renew(&this.owner, &driving, until).await {
            Ok(_) => lease / 3,
            Err(_) => lease / 12,
        };
    }
}

/// How many executions are in flight, apart from the executor, so that an execution's task
/// can let go of the executor before it counts itself out (a caller waiting for none in
/// flight then finds the store free).
struct Flight {
    in_flight: AtomicUsize,
    /// Whether the scheduler is claiming: rows it claimed are not yet in flight, and no
    /// longer due for anyone (`idle` waits for them).
    claiming: AtomicBool,
    idle: Notify,
    /// Where claims expire: the executions in flight, whose leases are renewed. One that is
    /// dropped (its commit could not be confirmed) lets its lease run out.
    leased: Option<Mutex<HashSet<ExecutionId>>>,
}

impl Flight {
    fn leased(&self) -> Option<std::sync::MutexGuard<'_, HashSet<ExecutionId>>> {
        let leased = self.leased.as_ref()?;
        Some(leased.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Marks the scheduler as claiming until dropped: the rows it claims are spawned (counted in
/// flight) before it is.
struct Claiming<'f>(&'f Flight);

impl<'f> Claiming<'f> {
    fn new(flight: &'f Flight) -> Self {
        flight.claiming.store(true, Ordering::SeqCst);
        Claiming(flight)
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.claiming.store(false, Ordering::SeqCst);
        if self.0.in_flight.load(Ordering::SeqCst) == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts an execution in flight until dropped (also when its task unwinds).
struct InFlight(Arc<Flight>, Arc<Notify>, ExecutionId);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut leased) = self.0.leased() {
            leased.remove(&self.2);
        }
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
        self.1.notify_one();
    }
}

/// Where a wait stands when its execution reaches it.
enum WaitEntry<M> {
    /// Run the step, handing out this token.
    Run(TaskToken),
    /// The token was completed: the execution is in this state now.
    Next(M),
    /// The token was failed, or its wait timed out: a failure of the waiting state.
    Failure(M, StepError, Option<Duration>),
    /// Nothing yet: let go of the execution.
    NotYet,
    /// The row changed since it was read: drive it again from the store.
    Again,
}

/// Where a checkpoint leaves the execution, besides its state: what `save` writes.
struct Save {
    status: ExecutionStatus,
    waiting_for: Option<WaitingFor>,
    due_at: Option<Millis>,
    /// Whether this worker keeps the execution (else it lets go of its lease).
    hold: bool,
    /// A token to hand out (a wait is about to begin).
    new_token: Option<TokenRecord>,
    /// Tokens to close, with what became of them.
    close_tokens: Vec<(String, TokenStatus)>,
}

impl Save {
    /// Running, due at `now`: the next step runs now, here if `hold`, else in whichever
    /// worker claims it.
    fn running(now: Millis, hold: bool) -> Self {
        Save {
            status: ExecutionStatus::Running,
            waiting_for: None,
            due_at: Some(now),
            hold,
            new_token: None,
            close_tokens: Vec::new(),
        }
    }

    /// Waiting for `what` until `due`, let go of.
    fn waiting(what: WaitingFor, due: Option<Millis>) -> Self {
        Save {
            status: ExecutionStatus::Waiting,
            waiting_for: Some(what),
            due_at: due,
            hold: false,
            new_token: None,
            close_tokens: Vec::new(),
        }
    }
}

/// A checkpoint: where it leaves the execution, at which step and attempt, and the history
/// events since the last one.
struct Write {
    step: u32,
    attempt: u32,
    save: Save,
    events: Vec<HistoryEvent>,
}

/// What a drive does next.
enum Next<M> {
    /// Enter this state: end in it, wait in it, or run its step.
    Enter(M),
    /// Run this state's step (a waiting state's, with its token handed to the driver).
    Attempt(M),
    /// The step of this state failed: apply its retries and routes.
    Failed(M, StepError, Option<Duration>),
    /// The drive is over: the execution ended, waits or was handed over (`Ok`), or must be
    /// driven again from the store (`Again`).
    Stop(Result<(), Again>),
}

/// The state as JSON, and its name.
pub(crate) fn snapshot<M: crate::Fsm + BranchData>(
    state: &M,
    id: ExecutionId,
) -> Result<(String, &'static str), DurableError> {
    let json = state.to_json().map_err(|e| DurableError::Serialize {
        execution: Some(id),
        message: e.to_string(),
    })?;
    Ok((json, state.state_name()))
}

/// `row` as a checkpoint at `now` leaves it: in the state `snapshot` is, with `status`, at
/// `step` and `attempt`, `events` events more, run under the definition `fingerprint`
/// (where it waits, and who holds it, are the caller's).
pub(crate) fn advanced(
    row: &ExecutionRecord,
    (json, name): (String, &'static str),
    status: ExecutionStatus,
    (step, attempt): (u32, u32),
    events: usize,
    (now, fingerprint): (Millis, &str),
) -> ExecutionRecord {
    let mut next = row.clone();
    next.state_name = name.to_owned();
    next.state = json;
    next.status = status;
    next.step = step;
    next.attempt = attempt;
    next.events = row.events + events as u32;
    next.updated_at = now;
    if step != row.step {
        next.entered_at = now;
    }
    fingerprint.clone_into(&mut next.fingerprint);
    next
}

/// The stored status of an execution that ended with `status`.
pub(crate) fn ended_status(status: &Status) -> ExecutionStatus {
    match status {
        Status::Succeeded => ExecutionStatus::Succeeded,
        Status::Failed => ExecutionStatus::Failed,
        Status::Errored { .. } => ExecutionStatus::Errored,
    }
}

/// A drive that must start again from the stored row (a token was answered while it timed
/// the wait out).
struct Again;

impl<M, H, S> Durable<M, H, S>
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
    S: Store,
{
    fn problem(&self, execution: Option<ExecutionId>, error: DurableError) {
        #[cfg(feature = "tracing")]
        tracing::error!(execution = ?execution, %error, "durable execution set aside");
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() >= 1024 {
            problems.remove(0);
        }
        problems.push(Problem { execution, error });
        drop(problems);
        self.ended.notify_waiters();
    }

    /// Drives `row` on a task of its own (`state` is its decoded state, when the caller has
    /// it).
    fn spawn(self: &Arc<Self>, row: ExecutionRecord, state: Option<M>) {
        self.flight.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(mut leased) = self.flight.leased() {
            leased.insert(row.id);
        }
        let this = Arc::clone(self);
        let in_flight = InFlight(Arc::clone(&self.flight), Arc::clone(&self.wake), row.id);
        tokio::spawn(async move {
            let id = row.id;
            let mut next = Some((row, state));
            while let Some((row, state)) = next.take() {
                match this.drive(row, state).await {
                    Ok(Ok(())) => {}
                    Ok(Err(Again)) => match this.client.store.get(id).await {
                        // Only while this worker still holds it.
                        Ok(Some(row)) if row.lease_owner.as_deref() == Some(&this.owner) => {
                            next = Some((row, None))
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            this.problem(Some(id), DurableError::NotFound { execution: id })
                        }
                        // The database is away: taken up again where it is claimed next.
                        Err(StoreError::Unavailable { .. }) => {}
                        Err(e) => this.problem(Some(id), e.into()),
                    },
                    // Another worker took the execution over (its lease ran out, say, while
                    // the database was away), or the database is away: not this execution's
                    // fault; it goes on from its last checkpoint where it is claimed next.
                    Err(DurableError::Store(
                        StoreError::Conflict { .. } | StoreError::Unavailable { .. },
                    )) => {}
                    Err(e) => {
                        if let DurableError::BadState { message, .. } = &e {
                            this.set_aside(id, message).await;
                        }
                        this.problem(Some(id), e)
                    }
                }
            }
            // The executor first, then the count: whoever waits for none in flight finds
            // the executor (and its store) free.
            drop(this);
            drop(in_flight);
        });
    }

    /// Ends an execution whose stored data this worker cannot read, while it still holds
    /// it: errored with [`StepError::BAD_STATE`], its data left as it was, for an operator
    /// to see and redrive once a definition reads it again. (If it cannot be written, the
    /// execution stays claimed, as it was.)
    async fn set_aside(&self, id: ExecutionId, message: &str) {
        let store = &self.client.store;
        let Ok(Some(row)) = store.get(id).await else {
            return;
        };
        if row.lease_owner.as_deref() != Some(&self.owner) || row.status.is_final() {
            return;
        }
        let now = self.client.clock.now();
        let error = StepError::fatal(StepError::BAD_STATE, message);
        let event = codec::set_aside_event(&row, &error, now);
        let mut next = row;
        next.status = ExecutionStatus::Errored;
        next.waiting_for = None;
        next.due_at = None;
        next.error = Some(codec::error_text(&error));
        let change = crate::durable::ops::released(next, now, vec![event], Vec::new());
        if store.amend(change).await.is_ok() {
            self.ended.notify_waiters();
        }
    }

    /// Until when a claim made at `now` holds: for ever (until released) when the store's
    /// claims do not expire.
    fn lease_until(&self, now: Millis) -> Millis {
        match self.client.store.lease() {
            Some(lease) => now.saturating_add(lease.as_millis() as Millis),
            None => Millis::MAX,
        }
    }

    /// Writes the execution's progress: its state, where it stands, and the events recorded
    /// since the last checkpoint. (Not `async`: the state is serialized before the future is
    /// made, so that the future holds no reference to it and `M` need not be `Sync`.)
    fn save<'s>(
        &'s self,
        row: &'s mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        state: &M,
        save: Save,
    ) -> impl core::future::Future<Output = Result<(), DurableError>> + Send + 's {
        let events = driver.rec.drain();
        let snapshot = snapshot(state, row.id);
        let (step, attempt) = (driver.step, driver.attempt);
        async move {
            let write = Write {
                step,
                attempt,
                save,
                events,
            };
            self.write(row, snapshot?, write).await
        }
    }

    async fn write(
        &self,
        row: &mut ExecutionRecord,
        (json, name): (String, &'static str),
        w: Write,
    ) -> Result<(), DurableError> {
        let events = codec::encode_all(&w.events, row.events);
        let save = w.save;
        let now = (self.client.clock.now(), self.client.fingerprint.as_str());
        let at = (w.step, w.attempt);
        // A step of an execution this worker holds, on a store whose claims do not run out,
        // keeps the due time the execution ran from: nothing claims it meanwhile, and left
        // alone, the store's index of due executions is not rewritten at every step.
        let kept = save.hold
            && save.status == ExecutionStatus::Running
            && row.status == ExecutionStatus::Running
            && row.due_at.is_some()
            && self.client.store.lease().is_none();
        let due_at = if kept { row.due_at } else { save.due_at };
        let mut next = advanced(row, (json, name), save.status, at, events.len(), now);
        next.waiting_for = save.waiting_for;
        next.due_at = due_at;
        if save.hold {
            // Each checkpoint extends the claim (the renewal task does between them).
            next.lease_expires = Some(self.lease_until(next.updated_at));
        } else {
            next.lease_owner = None;
            next.lease_expires = None;
        }
        let version = self
            .client
            .store
            .checkpoint(Checkpoint {
                record: next.clone(),
                events,
                new_token: save.new_token,
                close_tokens: save.close_tokens,
            })
            .await?;
        next.version = version;
        *row = next;
        Ok(())
    }

    /// Where the wait of `state` (a waiting state, at the driver's step and attempt) stands.
    async fn wait_entry(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        state: M,
        close: &mut Vec<(String, TokenStatus)>,
    ) -> Result<WaitEntry<M>, DurableError> {
        let def = M::DEFINITION;
        let (id, step, attempt) = (row.id, driver.step, driver.attempt);
        let index = state.state_index();
        let name = def.states[index].name;
        let token = self.client.store.wait_token(id, step, attempt).await?;
        let bad = |message: String| DurableError::BadState {
            execution: id,
            message,
        };
        let t = match token {
            Some(t) if t.status != TokenStatus::Open || row.status == ExecutionStatus::Waiting => t,
            // The first entry, or a step interrupted (or run again) after handing out a
            // token: a new token is handed out. The store keeps only tokens' hashes, so an
            // earlier token cannot be handed out again; it still answers this wait, and the
            // first answer through any of the wait's tokens decides.
            _ => return self.hand_out_token(row, driver, state).await,
        };
        match t.status {
            TokenStatus::Open => {
                let timeout = self.core.policies[index].wait_timeout;
                match (timeout, row.due_at) {
                    (Some(limit), Some(due)) if due <= self.client.clock.now() => {
                        close.push((t.secret_hash, TokenStatus::TimedOut));
                        let message = format_args!("no answer to the task token within {limit:?}");
                        Ok(WaitEntry::Failure(
                            state,
                            StepError::retryable(StepError::TIMEOUT, message),
                            Some(limit),
                        ))
                    }
                    _ => Ok(WaitEntry::NotYet),
                }
            }
            TokenStatus::Completed => {
                let result: serde_json::Value = t
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .ok_or_else(|| bad("the completed token has no result".into()))?;
                let transition = result
                    .get("transition")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|t| def.transitions.get(t as usize).map(|_| t as usize))
                    .ok_or_else(|| bad("the token's result names no transition".into()))?;
                let next: M = result
                    .get("state")
                    .map(|s| serde_json::from_value(s.clone()))
                    .transpose()
                    .map_err(|e| bad(format!("the token's next state does not deserialize: {e}")))?
                    .ok_or_else(|| bad("the token's result has no state".into()))?;
                let t = &def.transitions[transition];
                if t.catch || t.from != index || t.to != next.state_index() {
                    return Err(bad(format!(
                        "the token's result is not a transition of `{name}`"
                    )));
                }
                driver.wait_completed(name, transition, codec::answered_by(&result));
                Ok(WaitEntry::Next(next))
            }
            TokenStatus::Failed => {
                let result: Option<serde_json::Value> = t
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok());
                let error = result
                    .as_ref()
                    .and_then(codec::error_from)
                    .ok_or_else(|| bad("the failed token has no error".into()))?;
                let by = result.as_ref().map(codec::answered_by).unwrap_or_default();
                driver.wait_failed(name, by);
                Ok(WaitEntry::Failure(state, error, None))
            }
            TokenStatus::TimedOut | TokenStatus::Superseded => {
                // A write that came after this row was read (another claim's, or one of
                // this worker's from before a lease ran out): read it again, once.
                let now = self.client.store.get(id).await?;
                if now.is_some_and(|r| r.version != row.version) {
                    return Ok(WaitEntry::Again);
                }
                Err(bad(format!(
                    "it waits in `{name}` on a token that is {}",
                    t.status.as_str()
                )))
            }
        }
    }

    /// Hands out a new token for the wait at the driver's step and attempt: stored (its hash)
    /// with a checkpoint before the step runs, so an answer that comes at once finds it.
    async fn hand_out_token(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        state: M,
    ) -> Result<WaitEntry<M>, DurableError> {
        let (id, step, attempt) = (row.id, driver.step, driver.attempt);
        let token =
            TaskToken::generate(id, step, attempt).map_err(|e| DurableError::NoRandomness {
                execution: id,
                message: e.to_string(),
            })?;
        let record = TokenRecord {
            secret_hash: token.secret_hash(),
            execution: id,
            step,
            attempt,
            status: TokenStatus::Open,
            result: None,
        };
        let now = self.client.clock.now();
        let save = Save {
            new_token: Some(record),
            ..Save::running(now, true)
        };
        self.save(row, driver, &state, save).await?;
        Ok(WaitEntry::Run(token))
    }

    /// Drives one execution until it ends, waits or fails to checkpoint: from the state it
    /// was claimed (or started) in, each state entered, attempted, and its failures applied,
    /// in the pieces below.
    async fn drive(
        &self,
        mut row: ExecutionRecord,
        state: Option<M>,
    ) -> Result<Result<(), Again>, DurableError> {
        let def = M::DEFINITION;
        let id = row.id;
        let claimed = state.is_none();
        let state = match state {
            Some(state) => state,
            None => self.client.decode(&row)?,
        };
        let core = &self.core;
        // Where its fan-outs keep their branches.
        let children = StoreChildren::new(&self.client.store, &self.client.clock);
        let deadline = Deadline::new(core.has_timeouts);
        let origin = self.client.clock.instant(row.created_at);
        let rec = Recorder::durable(id, core.recording(), def, origin, row.events as usize);
        let cold = Cold {
            children: Some(&children),
            ..Cold::default()
        };
        let at = (row.step, row.attempt);
        let mut driver = Driver::stepwise(id, at, &core.policies, cold, rec, &deadline);
        let mut jitter = JitterSource::for_execution(core.jitter_seed, id);
        self.claimed(&row, &mut driver, &state, claimed);
        // Tokens to close with the next checkpoint (a wait that timed out).
        let mut close = Vec::new();
        let mut next = Next::Enter(state);
        loop {
            next = match next {
                Next::Enter(state) => self.enter(&mut row, &mut driver, state, &mut close).await?,
                Next::Attempt(state) => self.attempt(&mut row, &mut driver, state).await?,
                Next::Failed(failed, error, timed_out) => {
                    let failure = (failed, error, timed_out);
                    self.failure(&mut row, &mut driver, failure, &mut close, &mut jitter)
                        .await?
                }
                Next::Stop(stop) => return Ok(stop),
            };
        }
    }

    /// Records, for an execution just claimed, that it was taken up again: a running
    /// execution past its start was interrupted (the step it was in runs again), or the
    /// definition changed since it last ran.
    fn claimed(&self, row: &ExecutionRecord, driver: &mut Driver<'_, M>, state: &M, claimed: bool) {
        let changed = row.fingerprint != self.client.fingerprint;
        // Past its start, or claimed before (a worker stopped during its first step).
        let interrupted =
            claimed && row.status == ExecutionStatus::Running && (row.events > 1 || row.claims > 1);
        if interrupted || changed {
            let at = driver.rec.stamp();
            let name = state.state_name();
            driver.rec.event(at, || EventKind::ExecutionResumed {
                state: name,
                definition_changed: changed,
            });
        }
    }

    /// Enters `state`: ends the execution in a terminal state; for a waiting state, looks at
    /// its wait (a token to hand out, an answer, a timeout); else runs its step next.
    async fn enter(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        state: M,
        close: &mut Vec<(String, TokenStatus)>,
    ) -> Result<Next<M>, DurableError> {
        if state.is_terminal() {
            return self
                .end(row, driver, None, state)
                .await
                .map(|()| Next::Stop(Ok(())));
        }
        if M::DEFINITION.states[state.state_index()].wait.is_none() {
            return Ok(Next::Attempt(state));
        }
        Ok(
            match self.wait_entry(row, driver, state.clone(), close).await? {
                WaitEntry::Run(token) => {
                    driver.cold().token = Some(token);
                    Next::Attempt(state)
                }
                WaitEntry::Next(next) => {
                    let now = self.client.clock.now();
                    self.save(row, driver, &next, Save::running(now, true))
                        .await?;
                    Next::Enter(next)
                }
                WaitEntry::Failure(failed, error, limit) => Next::Failed(failed, error, limit),
                WaitEntry::Again => Next::Stop(Err(Again)),
                WaitEntry::NotYet => {
                    // Let go of it as it is.
                    let save = Save {
                        status: row.status,
                        waiting_for: row.waiting_for,
                        due_at: row.due_at,
                        hold: false,
                        new_token: None,
                        close_tokens: Vec::new(),
                    };
                    self.save(row, driver, &state, save).await?;
                    Next::Stop(Ok(()))
                }
            },
        )
    }

    /// Runs one attempt of `state`'s step, and checkpoints where it led: the next state
    /// (then entered here, unless the worker is closing), the end, or a wait for the token
    /// the step handed out.
    async fn attempt(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        state: M,
    ) -> Result<Next<M>, DurableError> {
        let core = &self.core;
        driver.cold().began = false;
        let deadline = driver.deadline;
        let fanning = fans_out(&state);
        let stop = Guard::new(state.run::<Cloned>(&core.steps, driver), deadline).await;
        deadline.disarm();
        let verdict = deadline.take_verdict();
        // A fan-out whose branch the store could not write: the drive stops here, the step
        // unrecorded, and the execution goes on from its last checkpoint (its branches from
        // theirs) where it is claimed next.
        let children = driver.cold.as_ref().and_then(|c| c.children);
        if let Some(error) = children.filter(|_| fanning).and_then(|c| c.interruption()) {
            return Err(error);
        }
        Ok(match stopped(stop, verdict, driver) {
            Stopped::Ended(end) => {
                self.end(row, driver, None, end).await?;
                Next::Stop(Ok(()))
            }
            Stopped::GaveUp(failed, error) => {
                self.end(row, driver, Some(error), failed).await?;
                Next::Stop(Ok(()))
            }
            Stopped::Paused(next) => {
                let now = self.client.clock.now();
                let hold = !self.closing.load(Ordering::SeqCst);
                self.save(row, driver, &next, Save::running(now, hold))
                    .await?;
                if hold {
                    Next::Enter(next)
                } else {
                    Next::Stop(Ok(()))
                }
            }
            Stopped::Waiting(waiting) => {
                driver.take_handed_out();
                let info = &M::DEFINITION.states[waiting.state_index()];
                let timeout = core.policies[waiting.state_index()].wait_timeout;
                let now = self.client.clock.now();
                driver.wait_started(info.name, timeout);
                let due = timeout.map(|t| now.saturating_add(t.as_millis() as Millis));
                let save = Save::waiting(WaitingFor::Token, due);
                self.save(row, driver, &waiting, save).await?;
                Next::Stop(Ok(()))
            }
            Stopped::Failed(failed, error, timed_out) => Next::Failed(failed, error, timed_out),
        })
    }

    /// Applies the failed state's policies to a failure and checkpoints the outcome: a retry
    /// (waited for here when it is due soon, else let go of until due), a route to another
    /// state, or the end, errored. Closes the token a failed waiting step handed out, and the
    /// tokens of a wait that timed out; if one of those was answered meanwhile, the drive
    /// starts again from the store and takes the answer.
    async fn failure(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        (failed, error, timed_out): (M, StepError, Option<Duration>),
        close: &mut Vec<(String, TokenStatus)>,
        jitter: &mut JitterSource,
    ) -> Result<Next<M>, DurableError> {
        let core = &self.core;
        if driver.take_handed_out().is_some() {
            // The step failed after handing out its token: the token is of no more use.
            let token = self
                .client
                .store
                .wait_token(row.id, driver.step, driver.attempt)
                .await?;
            if let Some(t) = token.filter(|t| t.status == TokenStatus::Open) {
                close.push((t.secret_hash, TokenStatus::Superseded));
            }
        }
        let mut closing = std::mem::take(close);
        let closes_tokens = !closing.is_empty();
        let answered = |saved: &Result<(), DurableError>| {
            closes_tokens && matches!(saved, Err(DurableError::Store(StoreError::Conflict { .. })))
        };
        let (state, save, wait) =
            match after_failure(&core.steps, driver, failed, error, timed_out, jitter) {
                AfterFailure::Retry(failed, delay) => {
                    let due = self
                        .client
                        .clock
                        .now()
                        .saturating_add(delay.as_millis() as Millis);
                    if delay < self.options.hold_retries_under
                        && !self.closing.load(Ordering::SeqCst)
                    {
                        (failed, Save::running(due, true), Some(delay))
                    } else {
                        (failed, Save::waiting(WaitingFor::Retry, Some(due)), None)
                    }
                }
                AfterFailure::Routed(next) => {
                    (next, Save::running(self.client.clock.now(), true), None)
                }
                AfterFailure::Errored(failed, error) => {
                    let ended = self
                        .end_closing(row, driver, Some(error), failed, &mut closing)
                        .await;
                    return if answered(&ended) {
                        Ok(Next::Stop(Err(Again)))
                    } else {
                        ended.map(|()| Next::Stop(Ok(())))
                    };
                }
            };
        let hold = save.hold;
        let saved = self
            .save(
                row,
                driver,
                &state,
                Save {
                    close_tokens: closing,
                    ..save
                },
            )
            .await;
        if answered(&saved) {
            return Ok(Next::Stop(Err(Again)));
        }
        saved?;
        match wait {
            Some(delay) => {
                Box::pin(tokio::time::sleep(delay)).await;
                // An operator may have cancelled it meanwhile: the retry runs only if the
                // row is still as this worker left it.
                let now = self.client.store.get(row.id).await?;
                if now.is_none_or(|now| now.version != row.version) {
                    return Ok(Next::Stop(Ok(())));
                }
            }
            None if !hold => return Ok(Next::Stop(Ok(()))),
            None => {}
        }
        Ok(Next::Enter(state))
    }

    /// Writes the end of an execution in `state`: errored with `error`, or in the terminal
    /// state it reached.
    async fn end(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        error: Option<StepError>,
        state: M,
    ) -> Result<(), DurableError> {
        self.end_closing(row, driver, error, state, &mut Vec::new())
            .await
    }

    async fn end_closing(
        &self,
        row: &mut ExecutionRecord,
        driver: &mut Driver<'_, M>,
        error: Option<StepError>,
        state: M,
        close: &mut Vec<(String, TokenStatus)>,
    ) -> Result<(), DurableError> {
        let (outcome, error) = match error {
            Some(error) => {
                let text = codec::error_text(&error);
                (driver.give_up(state, error), Some(text))
            }
            None => (driver.finish(state), None),
        };
        let status = ended_status(&outcome.status);
        let mut events = driver.rec.drain();
        events.extend(outcome.history.events().iter().cloned());
        row.error = error;
        let snapshot = snapshot(&outcome.state, row.id);
        drop(outcome);
        let write = Write {
            step: driver.step,
            attempt: driver.attempt,
            save: Save {
                status,
                waiting_for: None,
                due_at: None,
                hold: false,
                new_token: None,
                close_tokens: std::mem::take(close),
            },
            events,
        };
        let result = match snapshot {
            Ok(snapshot) => self.write(row, snapshot, write).await,
            Err(e) => Err(e),
        };
        self.ended.notify_waiters();
        result
    }
}

impl<M, H, S> DurableExecutor<M, H, S>
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
    S: Store,
{
    /// Starts an execution from `start` (normally the machine's initial state) and returns
    /// its id once the start is committed. The execution runs on a task of its own (after
    /// [`DurableExecutor::shutdown`], it is left due for another worker).
    pub async fn start(&self, start: impl Into<M>) -> Result<ExecutionId, DurableError> {
        Ok(self.start_with(StartOptions::default(), start).await?.id)
    }

    /// Starts an execution named `name`, or returns the machine's execution of that name if
    /// it has one (as [`DurableClient::start_named`](crate::DurableClient::start_named)).
    pub async fn start_named(
        &self,
        name: impl Into<String>,
        start: impl Into<M>,
    ) -> Result<Started, DurableError> {
        self.start_with(StartOptions::named(name), start).await
    }

    /// Starts an execution as `options` say; one it creates runs here at once.
    pub async fn start_with(
        &self,
        options: StartOptions,
        start: impl Into<M>,
    ) -> Result<Started, DurableError> {
        let inner = &self.inner;
        let state: M = start.into();
        let closing = inner.closing.load(Ordering::SeqCst);
        let owner = (!closing).then(|| {
            let now = inner.client.clock.now();
            (inner.owner.clone(), inner.lease_until(now))
        });
        let (record, created) = inner.client.create(&state, owner, &options).await?;
        let id = record.id;
        if created && !closing {
            inner.spawn(record, Some(state));
        }
        Ok(Started { id, created })
    }

    /// The execution named `name`, if the machine has one.
    pub async fn lookup(&self, name: &str) -> Result<Option<ExecutionSummary>, DurableError> {
        self.inner.client.lookup(name).await
    }

    /// The execution's row: status, state (as JSON), attempt, due time, lease...
    pub async fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, DurableError> {
        self.inner.client.get(id).await
    }

    /// The execution's current state, as the machine's enum.
    pub async fn state(&self, id: ExecutionId) -> Result<M, DurableError> {
        self.inner.client.state(id).await
    }

    /// The execution's history, read back from the store.
    pub async fn history(&self, id: ExecutionId) -> Result<History, DurableError> {
        self.inner.client.history(id).await
    }

    /// A page of this machine's executions that `query` selects (see
    /// [`DurableClient::list`](crate::DurableClient::list)).
    pub async fn list(&self, query: ListQuery) -> Result<Page, DurableError> {
        self.inner.client.list(query).await
    }

    /// Waits until the execution has ended, and returns its row. Returns an error if the
    /// execution is set aside (see [`DurableExecutor::problems`]).
    pub async fn finished(&self, id: ExecutionId) -> Result<ExecutionRecord, DurableError> {
        // Ends in other processes, as the store tells them.
        let mut elsewhere = self.inner.client.store.ended();
        loop {
            let notified = self.inner.ended.notified();
            let mut notified = core::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(row) = self.inner.client.ended(id).await? {
                return Ok(row);
            }
            if let Some(p) = self
                .problems()
                .into_iter()
                .rev()
                .find(|p| p.execution == Some(id))
            {
                return Err(p.error);
            }
            // Woken by any execution's end here or, through the store, elsewhere; and at least
            // every second.
            let mut changed = core::pin::pin!(next_end(&mut elsewhere));
            let either = std::future::poll_fn(|cx| {
                use core::future::Future;
                if notified.as_mut().poll(cx).is_ready() || changed.as_mut().poll(cx).is_ready() {
                    core::task::Poll::Ready(())
                } else {
                    core::task::Poll::Pending
                }
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), either).await;
        }
    }

    /// The executions set aside since the executor started (at most the last 1,024): their
    /// stored data could not be read, or a checkpoint could not be written. Each stays in
    /// the store as it was; the others go on.
    pub fn problems(&self) -> Vec<Problem> {
        self.inner
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Completes the wait that handed out `token` with what `complete` makes of the waiting
    /// state (typed: `State` names the waiting state, and only its next states compile).
    /// The answer is committed before this returns; the execution goes on on a worker.
    /// Returns the execution's id. A malformed, forged, already used or stale token, or one
    /// whose wait timed out, is refused with a [`TokenError`] and changes nothing.
    pub async fn complete<W, N>(
        &self,
        token: impl crate::AsTaskToken,
        complete: impl FnOnce(W::Typed) -> N,
    ) -> Result<ExecutionId, TokenError>
    where
        W: crate::Waiting<M>,
        N: Into<W::Next>,
    {
        let id = self
            .inner
            .client
            .complete::<W, N>(token, None, complete)
            .await?;
        // This worker may take it at once.
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Fails the wait that handed out `token` with `error`: the waiting state's retry policy
    /// and error routes apply, as to a step's error. Refuses a bad token as
    /// [`DurableExecutor::complete`] does.
    pub async fn fail(
        &self,
        token: impl crate::AsTaskToken,
        error: StepError,
    ) -> Result<ExecutionId, TokenError> {
        let id = self.inner.client.fail(token, None, error).await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Returns once nothing is due and nothing is in flight: every execution this worker
    /// could claim now has been claimed and has ended, waits (for a retry, a timer or a
    /// token), or is set aside. A fresh worker with due executions in the store is not idle
    /// until it has taken them. Executions that become due later are claimed then. (It also
    /// returns if the store cannot be read, or once the worker is shut down and none is in
    /// flight.)
    pub async fn idle(&self) {
        let inner = &self.inner;
        loop {
            let idle = inner.flight.idle.notified();
            let mut idle = core::pin::pin!(idle);
            idle.as_mut().enable();
            if inner.flight.in_flight.load(Ordering::SeqCst) > 0
                || inner.flight.claiming.load(Ordering::SeqCst)
            {
                idle.await;
                continue;
            }
            if inner.closing.load(Ordering::SeqCst) {
                return;
            }
            let now = inner.client.clock.now();
            match inner.client.store.due_now(M::DEFINITION.name, now).await {
                // Due and unclaimed: the scheduler takes it; look again once it has.
                Ok(true) => {
                    inner.wake.notify_one();
                    let _ = tokio::time::timeout(Duration::from_millis(10), idle).await;
                }
                _ => return,
            }
        }
    }

    /// Serves until `shutdown` completes (a signal, a
    /// [`CancellationToken`](https://docs.rs/tokio-util/latest/tokio_util/sync/struct.CancellationToken.html)'s
    /// `cancelled()`, a channel), then shuts down as [`DurableExecutor::shutdown`] does:
    /// claims no more, lets the executions in flight reach their next checkpoint (they stay
    /// in the store for the next worker) and returns when none is in flight. The worker
    /// claims and runs due executions from the moment it is built; `serve` is what a worker
    /// process's `main` awaits.
    ///
    /// ```no_run
    /// # use fsm_core::{DurableExecutor, Dispatch, Store};
    /// # async fn run<M, H, S>(worker: DurableExecutor<M, H, S>)
    /// # where
    /// #     M: Dispatch<H> + Clone + serde::Serialize + serde::de::DeserializeOwned,
    /// #     H: Send + Sync + 'static,
    /// #     S: Store,
    /// # {
    /// // In a worker's `main`: `tokio::signal::ctrl_c()`, here a channel.
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # drop(stop);
    /// worker.serve(async { stopped.await.ok(); }).await;
    /// # }
    /// ```
    pub async fn serve(&self, shutdown: impl core::future::Future<Output = ()>) {
        shutdown.await;
        self.shutdown().await;
    }

    /// Stops taking work: no more executions are claimed, and those in flight stop at their
    /// next checkpoint (they stay running in the store, and the next worker resumes them).
    /// Returns when none is in flight. Steps under way finish first.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        let scheduler = self
            .inner
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(scheduler) = scheduler {
            // It holds the executor only while it claims; it ends at its next look.
            let _ = scheduler.await;
        }
        self.idle().await;
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.client.store
    }

    /// The step handlers.
    pub fn steps(&self) -> &H {
        &self.inner.core.steps
    }

    /// How many executions this worker is driving now.
    pub fn in_flight(&self) -> usize {
        self.inner.flight.in_flight.load(Ordering::SeqCst)
    }
}
