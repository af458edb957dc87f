//! Layer 3: where durable executions live. [`Store`] is the seam between the durable executor
//! and a database; `SqliteStore` (feature `sqlite`) is the embedded implementation.
//!
//! A store holds rows, not machines: states are JSON text, history events are rows of text
//! and JSON, so a person can read them with the database's own tools. The durable executor
//! turns them back into typed values and owns every rule about what a row may become; a store
//! only applies writes atomically and refuses a write whose expected version is no longer the
//! row's (the fence that keeps an execution from advancing from two places).

use core::fmt;
use core::future::Future;
use std::path::PathBuf;

use crate::ExecutionId;

pub(crate) mod codec;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod rows;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Where a durable execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// It has a step to run now (or has one running).
    Running,
    /// It waits: for a retry's due time, or for a task token to be completed (see
    /// [`ExecutionRecord::waiting_for`]).
    Waiting,
    /// It ended in a terminal state of kind success.
    Succeeded,
    /// It ended in a terminal state of kind failure.
    Failed,
    /// A step failed for good and no route took its error, or the worker could not read the
    /// execution's stored data (its error's kind is `fsm.BadState`).
    Errored,
    /// An operator cancelled it ([`Operator::cancel`](crate::Operator::cancel)).
    Cancelled,
}

impl ExecutionStatus {
    /// Every status, in the order above.
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Running,
        ExecutionStatus::Waiting,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Errored,
        ExecutionStatus::Cancelled,
    ];

    /// The status as stored: `"running"`, `"waiting"`, `"succeeded"`, `"failed"`, `"errored"`,
    /// `"cancelled"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Waiting => "waiting",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Errored => "errored",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    /// The status stored as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => ExecutionStatus::Running,
            "waiting" => ExecutionStatus::Waiting,
            "succeeded" => ExecutionStatus::Succeeded,
            "failed" => ExecutionStatus::Failed,
            "errored" => ExecutionStatus::Errored,
            "cancelled" => ExecutionStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the execution has ended.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded
                | ExecutionStatus::Failed
                | ExecutionStatus::Errored
                | ExecutionStatus::Cancelled
        )
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a waiting execution waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitingFor {
    /// A retry, due at [`ExecutionRecord::due_at`].
    Retry,
    /// A task token to be completed or failed (until `due_at`, when the wait has a timeout).
    Token,
}

impl WaitingFor {
    /// As stored: `"retry"` or `"token"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WaitingFor::Retry => "retry",
            WaitingFor::Token => "token",
        }
    }

    /// The value stored as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "retry" => Some(WaitingFor::Retry),
            "token" => Some(WaitingFor::Token),
            _ => None,
        }
    }
}

/// One execution as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// The execution.
    pub id: ExecutionId,
    /// The name it was started under, unique among the machine's executions in the store
    /// (an order number, a request's idempotency key), if it was given one.
    pub name: Option<String>,
    /// The machine's name ([`Definition::name`](crate::Definition::name)).
    pub machine: String,
    /// The fingerprint of the definition the execution last ran under
    /// ([`Definition::fingerprint`](crate::Definition::fingerprint)).
    pub fingerprint: String,
    /// The name of the state it is in.
    pub state_name: String,
    /// The machine's enum in that state, as serde JSON.
    pub state: String,
    /// Where it is.
    pub status: ExecutionStatus,
    /// What it waits for, when its status is `Waiting`.
    pub waiting_for: Option<WaitingFor>,
    /// The step number of its idempotency keys (0 for its first step).
    pub step: u32,
    /// The attempt of the current step, from 1.
    pub attempt: u32,
    /// When its current step began (its first attempt, or the wait): when it entered the
    /// state it is in, or was redriven.
    pub entered_at: Millis,
    /// When its next attempt is due (a retry), or when its wait times out. A running
    /// execution is due from when it started or was released; a worker holding it on a store
    /// whose claims do not run out (SQLite) leaves the time as it is from step to step.
    pub due_at: Option<Millis>,
    /// Why it errored, as `kind: message`.
    pub error: Option<String>,
    /// How many history events it has.
    pub events: u32,
    /// When it was started.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// The worker driving it, if one is.
    pub lease_owner: Option<String>,
    /// Until when that worker's claim holds.
    pub lease_expires: Option<Millis>,
    /// Counts the writes to the execution: a write names the version it read, and a store
    /// refuses it if another write came between.
    pub version: u64,
    /// How many times a worker took the execution up (claimed it, or started it and ran it
    /// at once): more than once, and a worker took it up again after another let go of it or
    /// stopped.
    pub claims: u32,
    /// The execution this one is a branch of (a Parallel state's branch, a Map's item), run
    /// by its parent's worker inside the parent's step: no worker claims it on its own.
    pub parent: Option<ExecutionId>,
}

/// One execution as a list shows it: what it is and where it stands, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSummary {
    /// The execution.
    pub id: ExecutionId,
    /// The name it was started under, if any.
    pub name: Option<String>,
    /// The machine's name.
    pub machine: String,
    /// The state it is in.
    pub state_name: String,
    /// Where it is.
    pub status: ExecutionStatus,
    /// What it waits for, when its status is `Waiting`.
    pub waiting_for: Option<WaitingFor>,
    /// The step number (0 for its first step).
    pub step: u32,
    /// The attempt of the current step, from 1.
    pub attempt: u32,
    /// When its current step began.
    pub entered_at: Millis,
    /// When its next attempt is due, or when its wait times out.
    pub due_at: Option<Millis>,
    /// Why it errored, as `kind: message`.
    pub error: Option<String>,
    /// When it was started.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// The execution this one is a branch of, if it is one.
    pub parent: Option<ExecutionId>,
}

/// Where a page of [`Store::list`] ends: pass it back ([`ListQuery::after`]) for the next
/// page. Its text form (`Display`, `FromStr`) goes into a URL or a command line as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The last execution's start time.
    pub created_at: Millis,
    /// The last execution.
    pub id: ExecutionId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

impl core::str::FromStr for Cursor {
    type Err = crate::ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (at, id) = s.split_once('.').ok_or(crate::ParseIdError)?;
        if at.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::ParseIdError);
        }
        Ok(Cursor {
            created_at: at.parse().map_err(|_| crate::ParseIdError)?,
            id: id.parse()?,
        })
    }
}

/// One page of executions, and where the next begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The executions, in the query's order.
    pub executions: Vec<ExecutionSummary>,
    /// Where the next page begins, if there are more.
    pub next: Option<Cursor>,
}

/// How many executions a machine has in one state with one status ([`Stats::counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// The machine.
    pub machine: String,
    /// The state.
    pub state: String,
    /// The status.
    pub status: ExecutionStatus,
    /// How many.
    pub count: u64,
}

/// Where a store's executions stand, counted by the database ([`Store::stats`]): what the
/// command line's `stats`, the monitor and the console's header show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// How many executions each machine has in each state with each status, by machine,
    /// state and status.
    pub counts: Vec<StateCount>,
    /// How many running or waiting executions are due and held by no worker (or by one whose
    /// lease ran out): the backlog.
    pub backlog: u64,
    /// The earliest due time in the backlog: how long it has been waiting for a worker.
    pub backlog_since: Option<Millis>,
    /// The executions waiting for a task token the longest, oldest first (when the wait
    /// began: [`ExecutionSummary::updated_at`]).
    pub oldest_waits: Vec<ExecutionSummary>,
    /// How many running or waiting executions a worker holds by a lease that ran out: a
    /// worker that stopped renewing (killed, cut off), whose executions no other worker has
    /// taken over yet.
    pub expired_leases: u64,
}

impl Stats {
    /// How many executions have `status`.
    pub fn with_status(&self, status: ExecutionStatus) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.count)
            .sum()
    }
}

/// Which executions a monitor's rule looks for ([`Store::overdue`]), by a time on the
/// caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overdue {
    /// Running or waiting, started before this time.
    Open(Millis),
    /// Running or waiting for a retry, in a step that began before this time: a step that
    /// hangs, or keeps failing and being retried.
    Step(Millis),
    /// Waiting for a task token since before this time.
    Wait(Millis),
    /// Due before this time and held by no worker: a backlog no worker takes up.
    Backlog(Millis),
    /// Held by a worker whose lease ran out before this time: a worker that stopped renewing.
    Lease(Millis),
}

/// What [`Store::overdue`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// How many executions.
    pub count: u64,
    /// A few of them, the longest overdue first.
    pub examples: Vec<ExecutionSummary>,
}

/// What [`Store::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The execution was written.
    New,
    /// The machine already has an execution of that name: nothing was written; this is its
    /// row.
    Existing(Box<ExecutionRecord>),
}

/// One history event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its position in the execution's history, from 0.
    pub seq: u32,
    /// Microseconds since the execution was started.
    pub at_micros: u64,
    /// [`EventKind::name`](crate::EventKind::name), e.g. `"transition"`.
    pub kind: String,
    /// The state it is about.
    pub state: String,
    /// The rest of the event, as JSON (`null` when there is nothing more).
    pub detail: String,
}

/// What becomes of a task token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// Handed out, not yet answered.
    Open,
    /// Completed: the result holds the next state.
    Completed,
    /// Failed by the outside world: the result holds the error.
    Failed,
    /// Its wait ran past its timeout before an answer came.
    TimedOut,
    /// Its execution moved on without it (the step failed, or the attempt was retried).
    Superseded,
}

impl TokenStatus {
    /// As stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Open => "open",
            TokenStatus::Completed => "completed",
            TokenStatus::Failed => "failed",
            TokenStatus::TimedOut => "timed_out",
            TokenStatus::Superseded => "superseded",
        }
    }

    /// The value stored as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "open" => TokenStatus::Open,
            "completed" => TokenStatus::Completed,
            "failed" => TokenStatus::Failed,
            "timed_out" => TokenStatus::TimedOut,
            "superseded" => TokenStatus::Superseded,
            _ => return None,
        })
    }
}

/// A task token as stored: which execution and which entry into a waiting state it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The SHA-256 of the token's secret part (64 hexadecimal digits). Stores keep only
    /// this: the secret itself never reaches a store, so reading one does not answer a wait.
    pub secret_hash: String,
    /// The execution it belongs to.
    pub execution: ExecutionId,
    /// The step number of the wait.
    pub step: u32,
    /// The attempt of the wait.
    pub attempt: u32,
    /// What became of it.
    pub status: TokenStatus,
    /// The answer: for `Completed`, `{"state": <JSON>, "transition": <index>}`; for `Failed`,
    /// the error as JSON.
    pub result: Option<String>,
}

/// A new execution, written by [`Store::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecution {
    /// Its row (`version` is ignored: a new row has version 1).
    pub record: ExecutionRecord,
    /// Its first history events.
    pub events: Vec<StoredEvent>,
    /// A token to hand out, if it starts in a waiting state.
    pub token: Option<TokenRecord>,
}

/// The changes of one execution, written together by [`Store::checkpoint`] if the row is
/// still at `expected_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The row as it is to be. Its `version` is the version the writer read.
    pub record: ExecutionRecord,
    /// History events to append (their `seq` continue the stored ones).
    pub events: Vec<StoredEvent>,
    /// A token to hand out (a wait is about to begin).
    pub new_token: Option<TokenRecord>,
    /// Tokens to close, with what became of them (a wait that timed out, or that the
    /// execution left). Only open tokens are changed.
    pub close_tokens: Vec<(String, TokenStatus)>,
}

/// A machine's definition as a worker registered it ([`Store::register`]): what the command
/// line and the console read to draw an execution's diagram and check an operator's answer
/// without the machine's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDefinition {
    /// The machine's name.
    pub machine: String,
    /// [`Definition::fingerprint`](crate::Definition::fingerprint).
    pub fingerprint: String,
    /// The definition as JSON ([`Definition::to_json`](crate::Definition::to_json)).
    pub json: String,
    /// When a worker last registered it.
    pub registered_at: Millis,
}

/// An answer to a task token, written by [`Store::answer_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    /// The SHA-256 of the token's secret (see [`TokenRecord::secret_hash`]).
    pub secret_hash: String,
    /// The execution the caller read the token as belonging to.
    pub execution: ExecutionId,
    /// `Completed` or `Failed`.
    pub status: TokenStatus,
    /// See [`TokenRecord::result`].
    pub result: String,
    /// When it was answered: a waiting execution becomes due then.
    pub now: Millis,
}

/// Which executions [`Store::list`] returns, in which order, how many: every filter given
/// applies. Built with [`ListQuery::new`] and its setters:
///
/// ```
/// use fsm_core::store::ListQuery;
/// use fsm_core::ExecutionStatus;
///
/// let failed_orders = ListQuery::new()
///     .status(ExecutionStatus::Failed)
///     .name_prefix("order-")
///     .newest_first()
///     .limit(50);
/// # let _ = failed_orders;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only this machine's (a [`DurableClient`](crate::DurableClient) sets its own).
    pub machine: Option<String>,
    /// Only those with this status.
    pub status: Option<ExecutionStatus>,
    /// Only those in this state.
    pub state: Option<String>,
    /// Only the one of this name.
    pub name: Option<String>,
    /// Only those whose name begins with this.
    pub name_prefix: Option<String>,
    /// Only those started at or after this time.
    pub started_after: Option<Millis>,
    /// Only those started before this time.
    pub started_before: Option<Millis>,
    /// Only those whose state's data, as stored (JSON), holds this text.
    pub data_contains: Option<String>,
    /// Only these executions.
    pub ids: Option<Vec<ExecutionId>>,
    /// Only the branches of this execution (its Parallel states' branches, its Maps' items).
    pub parent: Option<ExecutionId>,
    /// Newest first (else oldest first), by start time.
    pub newest_first: bool,
    /// Only those after this cursor (in the query's order): the next page.
    pub after: Option<Cursor>,
    /// At most this many (0: every one). Default 100.
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            machine: None,
            status: None,
            state: None,
            name: None,
            name_prefix: None,
            started_after: None,
            started_before: None,
            data_contains: None,
            ids: None,
            parent: None,
            newest_first: false,
            after: None,
            limit: 100,
        }
    }
}

impl ListQuery {
    /// Every execution, oldest first, 100 to a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only `machine`'s executions.
    pub fn machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// Only those with `status`.
    pub fn status(mut self, status: ExecutionStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only those in state `state`.
    pub fn state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }

    /// Only the one named `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only those whose name begins with `prefix`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Only those started at or after `t`.
    pub fn started_after(mut self, t: Millis) -> Self {
        self.started_after = Some(t);
        self
    }

    /// Only those started before `t`.
    pub fn started_before(mut self, t: Millis) -> Self {
        self.started_before = Some(t);
        self
    }

    /// Only those whose state's data holds `text` in its JSON as stored: a customer's email
    /// finds the orders that carry it (`"status":"paid"` finds a field's value, spelt as
    /// serde wrote it). The text is matched as it is, case and all; no pattern.
    ///
    /// No index serves it: the store reads executions in the query's order until it has a
    /// page, so narrow it by machine, status or time on a large store.
    pub fn data_contains(mut self, text: impl Into<String>) -> Self {
        self.data_contains = Some(text.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Only the executions among `ids` (any number; those not stored are left out).
    pub fn ids(mut self, ids: impl IntoIterator<Item = ExecutionId>) -> Self {
        self.ids = Some(ids.into_iter().collect());
        self
    }

    /// Only the branches of `parent` (its Parallel states' branches, its Maps' items).
    pub fn parent(mut self, parent: ExecutionId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Newest first.
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// The page after `cursor` (a previous page's [`Page::next`]).
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most `n` executions (0: every one).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }
}

/// Why a store could not do what it was asked. Every variant names the file or the execution
/// it is about; none means the store lost anything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a database.
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file is a database of something else (it has tables and is not marked as ours).
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer version of this library, with a schema this one does
    /// not know. Nothing was changed.
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest version this library knows.
        supported: i64,
    },
    /// Another process has the file open as a worker.
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A claim or a checkpoint, which only a worker makes, on a store opened as a client
    /// (`SqliteStore::open_client`) or read-only.
    NotAWorker {
        /// The file.
        path: PathBuf,
    },
    /// The file (or its directory) cannot be written.
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// The disk (or the database's size limit) is full: the write was not made.
    Full {
        /// The file.
        path: PathBuf,
    },
    /// The execution's row changed since it was read (another write won): this write was not
    /// made.
    Conflict {
        /// The execution.
        execution: ExecutionId,
    },
    /// No such execution.
    NotFound {
        /// The execution.
        execution: ExecutionId,
    },
    /// A row that cannot be read as the schema says (a column of the wrong type, a status
    /// that is not one).
    Corrupt {
        /// The execution, when the row is one's.
        execution: Option<ExecutionId>,
        /// What is wrong.
        message: String,
    },
    /// The store has been shut down.
    Closed,
    /// The database cannot be reached (a server restarting, a broken connection): the write
    /// may or may not have been made; the store connects again for the next.
    Unavailable {
        /// What the connection said.
        message: String,
    },
    /// A connection that needs TLS could not have it: the server does not offer it
    /// (`sslmode=require` against a server without TLS), no TLS connector was given, or the
    /// handshake failed (a certificate not trusted). Trying again does not help.
    Tls {
        /// What the connection said.
        message: String,
    },
    /// The database role lacks a privilege the store needs (SQLSTATE 42501): to create what
    /// is missing (the schema, the tables, on first connect or an upgrade), or to read and
    /// write the tables.
    Privileges {
        /// What the server said.
        message: String,
    },
    /// Any other database error.
    Database {
        /// The file.
        path: PathBuf,
        /// The database's message.
        message: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotADatabase { path } => {
                write!(f, "{} is not a database", path.display())
            }
            StoreError::Foreign { path } => write!(
                f,
                "{} is a database of something else (it has tables and no fsm schema)",
                path.display()
            ),
            StoreError::NewerSchema {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has schema version {found}, newer than this library's {supported}: \
                 upgrade fsm-core to open it",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "{} is in use by another worker process (a process that starts executions \
                 and answers tokens beside it opens it with SqliteStore::open_client)",
                path.display()
            ),
            StoreError::NotAWorker { path } => write!(
                f,
                "{} is open as a client here: only its worker claims and checkpoints \
                 executions",
                path.display()
            ),
            StoreError::ReadOnly { path } => write!(f, "{} cannot be written", path.display()),
            StoreError::Full { path } => write!(
                f,
                "{}: the disk is full; the write was not made",
                path.display()
            ),
            StoreError::Conflict { execution } => write!(
                f,
                "execution {execution} changed since it was read; the write was not made"
            ),
            StoreError::NotFound { execution } => write!(f, "no execution {execution}"),
            StoreError::Corrupt {
                execution: Some(id),
                message,
            } => write!(f, "execution {id}: unreadable row: {message}"),
            StoreError::Corrupt {
                execution: None,
                message,
            } => write!(f, "unreadable row: {message}"),
            StoreError::Closed => f.write_str("the store has been shut down"),
            StoreError::Unavailable { message } => {
                write!(f, "the database cannot be reached: {message}")
            }
            StoreError::Tls { message } => write!(f, "TLS: {message}"),
            StoreError::Privileges { message } => write!(
                f,
                "the database role lacks a privilege: {message} (see the README's \
                 \"PostgreSQL roles\")"
            ),
            StoreError::Database { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A database that holds durable executions. The durable executor
/// ([`DurableExecutor`](crate::DurableExecutor)) is its only writer in a process; every method
/// is one atomic operation.
///
/// Implementations: `SqliteStore` and `PgStore` (features `sqlite`, `postgres`). The contract, which the executor
/// relies on:
/// - every write of one call is committed together or not at all, and is durable (as the
///   store's durability setting says) when the returned future completes;
/// - [`Store::checkpoint`] refuses, with [`StoreError::Conflict`], a record whose `version`
///   is not the stored one, and stores it with `version + 1`;
/// - [`Store::claim`] gives an execution to one owner at a time until its lease expires or
///   is released.
pub trait Store: Send + Sync + 'static {
    /// Writes a new execution; if it has a name that the machine's executions already have,
    /// writes nothing and returns the existing one's row. Atomic however many processes
    /// start the same name at once: one execution is written.
    fn create(&self, new: NewExecution)
        -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Writes a checkpoint, if the row is still at the version it names; returns the new
    /// version.
    fn checkpoint(
        &self,
        checkpoint: Checkpoint,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// An operator's change to an execution (a redrive, a cancel, an execution set aside for
    /// data a worker cannot read): written as [`Store::checkpoint`] writes, fenced by the
    /// version the same way, so a worker driving the execution meanwhile finds its next
    /// checkpoint refused. Unlike a checkpoint, any process may make it (a SQLite client
    /// too), and the store tells its workers when it leaves the execution due.
    fn amend(&self, change: Checkpoint) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.checkpoint(change)
    }

    /// Records `definition` (a worker does when it starts), keeping the first registration
    /// of each fingerprint's JSON and the time of the last. The default keeps nothing (a
    /// store without definitions: tools then cannot draw its executions).
    fn register(
        &self,
        definition: StoredDefinition,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = definition;
        async { Ok(()) }
    }

    /// The definitions registered for `machine` (every machine's when `None`), the most
    /// recently registered first. The default has none.
    fn definitions(
        &self,
        machine: Option<&str>,
    ) -> impl Future<Output = Result<Vec<StoredDefinition>, StoreError>> + Send {
        let _ = machine;
        async { Ok(Vec::new()) }
    }

    /// Claims for `owner`, until `lease_until`, up to `limit` executions of `machine` that are
    /// running or waiting with a due time at or before `now`, and that no one holds (no
    /// owner, or an expired lease). Returns them as claimed (with their new versions), each
    /// read on its own: a row that cannot be read (a column of another type, a NULL) is
    /// claimed all the same, so that it is not claimed again while the lease holds, and
    /// returned as its [`StoreError::Corrupt`]; the other rows go on.
    fn claim(
        &self,
        machine: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Result<ExecutionRecord, StoreError>>, StoreError>> + Send;

    /// The earliest due time of `machine`'s running or waiting executions that no one holds.
    fn next_due(
        &self,
        machine: &str,
    ) -> impl Future<Output = Result<Option<Millis>, StoreError>> + Send;

    /// Whether any of `machine`'s running or waiting executions that no one holds is due at
    /// `now` (on the caller's clock): one a worker would claim now. A store whose time is
    /// another's (a database server's clock) answers by that time.
    fn due_now(
        &self,
        machine: &str,
        now: Millis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let next = self.next_due(machine);
        async move { Ok(next.await?.is_some_and(|due| due <= now)) }
    }

    /// One execution's row.
    fn get(
        &self,
        id: ExecutionId,
    ) -> impl Future<Output = Result<Option<ExecutionRecord>, StoreError>> + Send;

    /// One execution's history events, in order.
    fn events(
        &self,
        id: ExecutionId,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// A page of the executions `query` selects, in its order (by start time, then id).
    fn list(&self, query: ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// [`Store::stats`] with its counts by machine and status alone (each
    /// [`StateCount::state`] empty): the stores answer it from their status index, where
    /// counting by state reads every execution (on 1,000,000 executions, SQLite counts by
    /// status in 70 ms, by state in 1 s). What a page's header, read every few seconds, needs.
    /// The default sums [`Store::stats`]'s counts.
    fn overview(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> impl Future<Output = Result<Stats, StoreError>> + Send {
        let stats = self.stats(machine, now, oldest);
        async move {
            let mut stats = stats.await?;
            let mut counts: Vec<StateCount> = Vec::new();
            for c in stats.counts {
                match counts
                    .iter_mut()
                    .find(|o| o.machine == c.machine && o.status == c.status)
                {
                    Some(o) => o.count += c.count,
                    None => counts.push(StateCount {
                        state: String::new(),
                        ..c
                    }),
                }
            }
            stats.counts = counts;
            Ok(stats)
        }
    }

    /// Where the executions (of `machine`, or every machine's) stand at `now` (the caller's
    /// clock; a store whose time is a server's counts by that): counts by state and status,
    /// the backlog, the `oldest` longest waits, leases that ran out. The default reads
    /// every summary through [`Store::list`]; the stores count in SQL, on their indexes.
    fn stats(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> impl Future<Output = Result<Stats, StoreError>> + Send {
        let mut query = ListQuery::new().limit(0);
        query.machine = machine.map(str::to_owned);
        let all = self.list(query);
        async move {
            let all = all.await?.executions;
            let mut stats = Stats::default();
            for e in &all {
                let found = stats.counts.iter_mut().find(|c| {
                    (c.machine.as_str(), c.state.as_str(), c.status)
                        == (e.machine.as_str(), e.state_name.as_str(), e.status)
                });
                match found {
                    Some(c) => c.count += 1,
                    None => stats.counts.push(StateCount {
                        machine: e.machine.clone(),
                        state: e.state_name.clone(),
                        status: e.status,
                        count: 1,
                    }),
                }
                // (Leases are not in a summary: held executions count in the backlog here.)
                if !e.status.is_final() && e.due_at.is_some_and(|d| d <= now) {
                    stats.backlog += 1;
                    stats.backlog_since = stats.backlog_since.min(e.due_at).or(e.due_at);
                }
            }
            stats.counts.sort_by(|a, b| {
                (&a.machine, &a.state, a.status.as_str()).cmp(&(
                    &b.machine,
                    &b.state,
                    b.status.as_str(),
                ))
            });
            let mut waits: Vec<_> = all
                .into_iter()
                .filter(|e| e.waiting_for == Some(WaitingFor::Token) && !e.status.is_final())
                .collect();
            waits.sort_by_key(|e| e.updated_at);
            waits.truncate(oldest);
            stats.oldest_waits = waits;
            Ok(stats)
        }
    }

    /// The executions (of `machine`, or every machine's) that `which` selects: how many, and
    /// up to `examples` of them, the longest overdue first. The default reads every summary
    /// through [`Store::list`] (and cannot see leases); the stores ask SQL, on indexes.
    fn overdue(
        &self,
        machine: Option<&str>,
        which: Overdue,
        examples: usize,
    ) -> impl Future<Output = Result<Found, StoreError>> + Send {
        let mut query = ListQuery::new().limit(0);
        query.machine = machine.map(str::to_owned);
        let all = self.list(query);
        async move {
            let open = |e: &ExecutionSummary| !e.status.is_final();
            let mut found: Vec<(Millis, ExecutionSummary)> = all
                .await?
                .executions
                .into_iter()
                .filter_map(|e| {
                    let since = match which {
                        Overdue::Open(t) => (open(&e) && e.created_at < t).then_some(e.created_at),
                        Overdue::Step(t) => (e.status == ExecutionStatus::Running
                            || e.waiting_for == Some(WaitingFor::Retry))
                        .then_some(e.entered_at)
                        .filter(|&at| open(&e) && at < t),
                        Overdue::Wait(t) => (e.waiting_for == Some(WaitingFor::Token))
                            .then_some(e.entered_at)
                            .filter(|&at| open(&e) && at < t),
                        Overdue::Backlog(t) => e.due_at.filter(|&d| open(&e) && d < t),
                        Overdue::Lease(_) => None,
                    }?;
                    Some((since, e))
                })
                .collect();
            found.sort_by_key(|(since, e)| (*since, e.id));
            let count = found.len() as u64;
            found.truncate(examples);
            Ok(Found {
                count,
                examples: found.into_iter().map(|(_, e)| e).collect(),
            })
        }
    }

    /// How many executions (of `machine`, or every machine's) ended at or after `since`, by
    /// machine, the state they ended in, and status: what a failure rate is counted from.
    fn ended_since(
        &self,
        machine: Option<&str>,
        since: Millis,
    ) -> impl Future<Output = Result<Vec<StateCount>, StoreError>> + Send {
        let mut query = ListQuery::new().limit(0);
        query.machine = machine.map(str::to_owned);
        let all = self.list(query);
        async move {
            let mut counts: Vec<StateCount> = Vec::new();
            for e in all.await?.executions {
                if !e.status.is_final() || e.updated_at < since {
                    continue;
                }
                let key = (e.machine.as_str(), e.state_name.as_str(), e.status);
                match counts
                    .iter_mut()
                    .find(|c| (c.machine.as_str(), c.state.as_str(), c.status) == key)
                {
                    Some(c) => c.count += 1,
                    None => counts.push(StateCount {
                        machine: e.machine.clone(),
                        state: e.state_name.clone(),
                        status: e.status,
                        count: 1,
                    }),
                }
            }
            Ok(counts)
        }
    }

    /// How many executions `query` selects, its cursor and limit aside (what a bulk action
    /// over it would look at). The default counts [`Store::list`]'s summaries; the stores
    /// count in SQL.
    fn count(&self, query: ListQuery) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut query = query.limit(0);
        query.after = None;
        let all = self.list(query);
        async move { Ok(all.await?.executions.len() as u64) }
    }

    /// A task token, by the hash of its secret.
    fn token(
        &self,
        secret_hash: &str,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Answers an open token of `answer.execution`: returns `false` (and changes nothing)
    /// if the token is not open, or another token of the same wait (a step that ran again
    /// hands out a new one) was answered or closed. A waiting execution becomes due at `answer.now`.
    fn answer_token(
        &self,
        answer: TokenAnswer,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The token that decides an execution's wait at `step`, `attempt`: one that was
    /// answered, else one that was closed, else an open one (a wait has one token per time
    /// its step ran).
    fn wait_token(
        &self,
        id: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// How long a claim holds, if claims expire: the worker renews its claims well within it,
    /// and a dead worker's executions are taken over once it has passed. `None` (the
    /// default): a claim holds until it is released, for a store with one worker at a time.
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extends to `until` the leases `owner` holds on `executions` (those it is driving);
    /// returns how many it extended. A lease `owner` holds on an execution it no longer
    /// drives (it dropped it when a checkpoint's commit could not be confirmed) runs out.
    fn renew(
        &self,
        owner: &str,
        executions: &[ExecutionId],
        until: Millis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = (owner, executions, until);
        async { Ok(0) }
    }

    /// Changes whenever work may have become due for a worker that did not write it: an
    /// execution started by a client or another worker, a token answered (in this process
    /// or, for a shared store, in another), so that idle workers claim it at once. Every
    /// receiver sees every change. `None` (the default): the store announces nothing.
    fn work(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Changes whenever an execution has ended (in this process or, for a shared store, in
    /// another), so that whoever waits for one looks at once. `None` (the default): callers
    /// look again from time to time.
    fn ended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
