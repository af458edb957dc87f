//! The embedded store: one SQLite file in WAL mode, written by one thread that commits the
//! writes of many executions together (group commit).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, Row};
use tokio::sync::oneshot;

use super::{
    rows, rows::COLUMNS, rows::DECISIVE_FIRST, Checkpoint, Created, ExecutionRecord, Found,
    ListQuery, Millis, NewExecution, Overdue, Page, StateCount, Stats, Store, StoreError,
    StoredDefinition, StoredEvent, TokenAnswer, TokenRecord, WaitingFor,
};
use crate::ExecutionId;
use rows::state_count;

mod lock;

/// What a store holds on its file for its lifetime, released when dropped (held, never read).
enum Hold {
    Worker(#[allow(dead_code)] lock::WorkerLock),
    Reader(#[allow(dead_code)] lock::ReaderHold),
}

/// Marks a SQLite file as this library's (`PRAGMA application_id`, "FSM1").
const APPLICATION_ID: i64 = 0x4653_4D31;
/// The schema this library writes and reads (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 6;
/// The most requests committed in one transaction.
const BATCH: usize = 4096;
/// The WAL's length, in pages, past which a commit copies it back into the database.
const WAL_PAGES: u32 = 4_000;

const SCHEMA: &str = "
CREATE TABLE executions (
    id            TEXT PRIMARY KEY,
    machine       TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    state_name    TEXT NOT NULL,
    state         TEXT NOT NULL,
    status        TEXT NOT NULL,
    waiting_for   TEXT,
    step          INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    due_at        INTEGER,
    error         TEXT,
    events        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_expires INTEGER,
    version       INTEGER NOT NULL,
    name          TEXT,
    claims        INTEGER NOT NULL DEFAULT 0,
    entered_at    INTEGER NOT NULL DEFAULT 0,
    parent        TEXT
);
CREATE INDEX executions_parent ON executions (parent) WHERE parent IS NOT NULL;
CREATE INDEX executions_ended ON executions (updated_at)
    WHERE status NOT IN ('running', 'waiting');
CREATE INDEX executions_due ON executions (machine, due_at)
    WHERE status IN ('running', 'waiting');
CREATE INDEX executions_status ON executions (status, machine, created_at);
CREATE UNIQUE INDEX executions_name ON executions (machine, name) WHERE name IS NOT NULL;
CREATE INDEX executions_started ON executions (machine, created_at, id);
CREATE INDEX executions_created ON executions (created_at, id);
CREATE TABLE events (
    execution TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    at        INTEGER NOT NULL, -- microseconds since the execution started
    kind      TEXT NOT NULL,
    state     TEXT NOT NULL,
    detail    TEXT NOT NULL,
    PRIMARY KEY (execution, seq)
) WITHOUT ROWID;
CREATE TABLE tokens (
    secret_hash TEXT PRIMARY KEY,
    execution  TEXT NOT NULL,
    step       INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT
);
CREATE INDEX tokens_wait ON tokens (execution, step, attempt);
CREATE TABLE definitions (
    machine       TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    definition    TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (machine, fingerprint)
);
";

/// What a committed transaction promises, traded against speed. Commits are grouped either
/// way: one transaction holds the checkpoints of every execution that asked meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A committed checkpoint survives the process being killed (it is in the operating
    /// system's hands); a power cut or an operating-system crash may lose the last commits,
    /// never the file. SQLite's `synchronous = NORMAL` in WAL mode.
    #[default]
    Process,
    /// A committed checkpoint survives a power cut too: every commit waits for the disk
    /// (`fsync`). SQLite's `synchronous = FULL`.
    PowerLoss,
}

/// How [`SqliteStore::open_with`] opens a file.
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// What a commit promises (default [`Durability::Process`]).
    pub durability: Durability,
    /// Open the file read-only, to inspect it beside a running worker: every write is refused
    /// with [`StoreError::ReadOnly`], and no worker lock is taken.
    pub read_only: bool,
    /// Open the file as a client of the worker process that holds it (see
    /// [`SqliteStore::open_client`]): it starts executions, answers task tokens and reads;
    /// claims and checkpoints, a worker's writes, are refused with [`StoreError::NotAWorker`].
    pub client: bool,
    /// The largest the database may grow, in bytes (rounded down to pages); past it a write is
    /// refused with [`StoreError::Full`], as on a full disk.
    pub max_size: Option<u64>,
}

/// Durable executions in one SQLite file (SQLite compiled in; nothing to install).
///
/// The file is in WAL mode, so readers (`sqlite3 orders.db`, another process's read-only
/// store) do not block the worker. One worker process at a time opens a file as a worker: it
/// takes a lock on the database file itself (whatever path names it: a symlink, a hard link)
/// that the operating system releases when the process ends, however it ends, so the next
/// process to open the file knows every execution that was held is free to resume.
///
/// Any number of other processes open it as clients ([`SqliteStore::open_client`]): an API
/// server that starts executions, a webhook that answers their task tokens, beside the
/// worker. SQLite serializes their writes with the worker's; each store notices what other
/// processes commit within [`SqliteStore::NOTICE`] (it watches SQLite's `data_version`), so
/// the worker claims a client's start or answer at once, and a client waiting for an
/// execution to end ([`DurableClient::finished`](crate::DurableClient::finished)) sees it.
///
/// A new file is created readable and writable by its owner only (mode `0600`), and so are its
/// WAL and shared-memory files: they hold every execution's data and its waits.
///
/// Cheap to clone: clones share one connection, on a thread of its own that commits the
/// writes of all waiting callers in one transaction.
#[derive(Clone)]
pub struct SqliteStore {
    inner: std::sync::Arc<Shared>,
}

struct Shared {
    requests: mpsc::Sender<Request>,
    /// Changed after a write that leaves work due for whichever worker claims it, and when
    /// another process committed to the file.
    work: Arc<tokio::sync::watch::Sender<u64>>,
    /// Changed after a checkpoint that ended an execution, and when another process
    /// committed to the file.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
    path: PathBuf,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Held for the store's lifetime: the worker lock, or a read-only store's hold on the
    /// file (see `lock`). Dropped after the connection, which `drop` closes first.
    _hold: Hold,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered what it holds.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.requests, tx));
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Create(NewExecution, Reply<Created>),
    Checkpoint(Checkpoint, Reply<u64>),
    /// An operator's change: a checkpoint any process may make.
    Amend(Checkpoint, Reply<u64>),
    Register(StoredDefinition, Reply<bool>),
    Definitions(Option<String>, Reply<Vec<StoredDefinition>>),
    /// Machine, now, oldest, counted by state (else by status alone).
    Stats(Option<String>, Millis, usize, bool, Reply<Stats>),
    Overdue(Option<String>, Overdue, usize, Reply<Found>),
    EndedSince(Option<String>, Millis, Reply<Vec<StateCount>>),
    Claim {
        machine: String,
        owner: String,
        now: Millis,
        lease_until: Millis,
        limit: usize,
        reply: Reply<Vec<Claimed>>,
    },
    NextDue(String, Reply<Option<Millis>>),
    Get(ExecutionId, Reply<Option<ExecutionRecord>>),
    Events(ExecutionId, Reply<Vec<StoredEvent>>),
    List(ListQuery, Reply<Page>),
    Count(ListQuery, Reply<u64>),
    Token(String, Reply<Option<TokenRecord>>),
    Answer(TokenAnswer, Reply<bool>),
    WaitToken(ExecutionId, u32, u32, Reply<Option<TokenRecord>>),
}

impl Request {
    /// Whether it writes (and so runs in the batch's transaction).
    fn writes(&self) -> bool {
        matches!(
            self,
            Request::Create(..)
                | Request::Checkpoint(..)
                | Request::Amend(..)
                | Request::Register(..)
                | Request::Claim { .. }
                | Request::Answer(..)
        )
    }
}

impl SqliteStore {
    /// How soon a store notices what another process committed to its file (a client's start
    /// or answer, a worker's end of an execution).
    pub const NOTICE: std::time::Duration = std::time::Duration::from_millis(20);

    /// Tells the workers of this store that work may be due.
    fn announce(&self) {
        self.inner.work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Opens the store in `path` as a client of the worker process that holds it: for a
    /// process that starts executions and answers task tokens but runs no step (an API
    /// server, a webhook), through a [`DurableClient`](crate::DurableClient). Takes no worker
    /// lock, so it opens while a worker runs (or none does: what it writes waits for one).
    /// The file must exist and be of this version's schema (a worker creates and upgrades
    /// it).
    pub fn open_client(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(
            path,
            SqliteOptions {
                client: true,
                ..SqliteOptions::default()
            },
        )
    }

    /// Opens (or creates) the store in `path` as a worker, with the default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store in `path`.
    ///
    /// Fails, changing nothing, if the file is not a SQLite database, is another program's
    /// database, has a newer schema, is open in another worker process (through whatever
    /// path), or has several names (hard links: SQLite's WAL is kept per name).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&path).ok();
        if let Some(links) = meta.as_ref().map(std::os::unix::fs::MetadataExt::nlink) {
            if links > 1 {
                // SQLite names the WAL after the path: through another name, commits still in
                // the first name's WAL are not seen, and a worker would resume from before them.
                return Err(StoreError::Database {
                    path,
                    message: format!(
                        "the file has {links} names (hard links), and SQLite keeps a WAL per \
                         name; open it by one name only"
                    ),
                });
            }
        }
        let exists = meta.is_some_and(|m| m.len() > 0);
        let worker = !options.read_only && !options.client;
        if !exists && !worker {
            return Err(StoreError::Database {
                path,
                message: "no such database (a worker creates it)".into(),
            });
        }
        // The worker lock first: a second worker is refused before it reads anything. A
        // read-only store or a client registers its hold before it opens the file.
        let hold = if !worker {
            Hold::Reader(lock::ReaderHold::new(&path))
        } else {
            match lock::WorkerLock::acquire(&path) {
                Ok(lock) => Hold::Worker(lock),
                Err(lock::LockError::Held) => return Err(StoreError::Locked { path }),
                Err(lock::LockError::Io(e)) => return Err(io_error(&path, &e)),
            }
        };
        if exists {
            // Read before anything is written: a file that is not ours stays as it was.
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| error(&path, e))?;
            let version = check_schema(&conn, &path)?;
            if !worker && version < SCHEMA_VERSION {
                return Err(StoreError::Database {
                    path,
                    message: format!(
                        "written by an earlier version (schema {version}, this one reads \
                         {SCHEMA_VERSION}): open it once as a worker, which upgrades it"
                    ),
                });
            }
        }
        let flags = if options.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| error(&path, e))?;
        if worker {
            prepare(&mut conn, &path, &options)?;
        } else {
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| error(&path, e))?;
        }
        let (requests, rx) = mpsc::channel();
        let thread_path = path.clone();
        let work = Arc::new(tokio::sync::watch::Sender::new(0));
        let ended = Arc::new(tokio::sync::watch::Sender::new(0));
        let others = Others {
            work: Arc::clone(&work),
            ended: Arc::clone(&ended),
            seen: None,
            looked: std::time::Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("fsm-sqlite".into())
            .spawn(move || Writer::new(conn, thread_path, worker).serve(rx, others))
            .map_err(|e| io_error(&path, &e))?;
        Ok(SqliteStore {
            inner: std::sync::Arc::new(Shared {
                requests,
                work,
                ended,
                path,
                thread: std::sync::Mutex::new(Some(thread)),
                _hold: hold,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(request(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Checks that `conn` is a database of ours that this version can read, or empty; returns its
/// schema version (0 if empty).
fn check_schema(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let pragma = |name: &str| -> Result<i64, StoreError> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| error(path, e))
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    if app == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        return Ok(version);
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| error(path, e))?;
    if app != 0 || tables > 0 {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
        });
    }
    Ok(0)
}

/// Sets the connection up for writing: WAL, durability, the schema, and frees the executions
/// of workers that are gone (this process holds the worker lock, so they are).
fn prepare(conn: &mut Connection, path: &Path, options: &SqliteOptions) -> Result<(), StoreError> {
    let err = |e| error(path, e);
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database {
            path: path.to_path_buf(),
            message: format!("cannot use WAL mode (the journal is {mode})"),
        });
    }
    let sync = match options.durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    // The WAL is copied back into the database (and both synced) every `WAL_PAGES` pages
    // rather than SQLite's 1,000: a page that many checkpoints change is copied once per
    // 16 MiB of WAL instead of once per 4 MiB. At 1,000 the copies took a tenth of the writer
    // thread in the durable bench; at 10,000 the commit that copies held its transitions up
    // to 25 ms (10-12 ms at 4,000, for the same throughput).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = {WAL_PAGES};"
    ))
    .map_err(err)?;
    if let Some(bytes) = options.max_size {
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        let pages = (bytes / page.max(1) as u64).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(err)?;
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    check_schema(&tx, path)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version == 0 {
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(err)?;
    } else if version < SCHEMA_VERSION {
        migrate(&tx, version).map_err(err)?;
    }
    tx.execute(
        // A running execution held here kept the due time it ran from (see the durable
        // executor's `write`): released, it is due since its last checkpoint.
        "UPDATE executions SET lease_owner = NULL, lease_expires = NULL, \
         due_at = CASE WHEN status = 'running' THEN max(due_at, updated_at) ELSE due_at END \
         WHERE lease_owner IS NOT NULL",
        [],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

/// Brings a file written by an earlier version up to [`SCHEMA_VERSION`], in the transaction
/// that opens it as a worker.
fn migrate(tx: &Connection, from: i64) -> Result<(), rusqlite::Error> {
    if from < 2 {
        // 2: a token's row keeps the SHA-256 of its secret, not the secret. Tokens handed
        // out before still answer: their secrets are hashed in place.
        tx.execute_batch("ALTER TABLE tokens RENAME COLUMN secret TO secret_hash")?;
        let secrets: Vec<String> = tx
            .prepare("SELECT secret_hash FROM tokens")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut update = tx.prepare("UPDATE tokens SET secret_hash = ?1 WHERE secret_hash = ?2")?;
        for secret in secrets {
            // A secret that is not 32 hexadecimal digits never answered anything; it is left
            // as it is, and matches no hash.
            if let Ok(value) = u128::from_str_radix(&secret, 16) {
                update.execute(params![crate::runtime::token::hash_secret(value), secret])?;
            }
        }
    }
    if from < 3 {
        // 3: executions may have a name, unique per machine, and count their claims; the
        // lists' order has an index; events' times are microseconds (were milliseconds).
        tx.execute_batch(
            "ALTER TABLE executions ADD COLUMN name TEXT; \
             ALTER TABLE executions ADD COLUMN claims INTEGER NOT NULL DEFAULT 0; \
             CREATE UNIQUE INDEX executions_name ON executions (machine, name) \
               WHERE name IS NOT NULL; \
             CREATE INDEX executions_started ON executions (machine, created_at, id); \
             UPDATE events SET at = at * 1000;",
        )?;
    }
    if from < 4 {
        // 4: workers register their machines' definitions, for tools without the code.
        // Executions know when their step began; a failure rate has an index. (The open
        // executions' questions read the `executions_due` rows: an index of their own cost
        // every checkpoint about 10%.)
        tx.execute_batch(
            "CREATE TABLE definitions (machine TEXT NOT NULL, fingerprint TEXT NOT NULL, \
             definition TEXT NOT NULL, registered_at INTEGER NOT NULL, \
             PRIMARY KEY (machine, fingerprint)); \
             ALTER TABLE executions ADD COLUMN entered_at INTEGER NOT NULL DEFAULT 0; \
             UPDATE executions SET entered_at = updated_at; \
             CREATE INDEX executions_ended ON executions (updated_at) \
               WHERE status NOT IN ('running', 'waiting');",
        )?;
    }
    if from < 5 {
        // 5: the list of every machine's executions, newest first, has an index (the
        // console's first page; without it a million executions are sorted). Starts write
        // it; checkpoints do not (a start time never changes).
        tx.execute_batch("CREATE INDEX executions_created ON executions (created_at, id)")?;
    }
    if from < 6 {
        // 6: the branches of a Parallel or Map state are executions of their own, linked to
        // their parent.
        tx.execute_batch(
            "ALTER TABLE executions ADD COLUMN parent TEXT; \
             CREATE INDEX executions_parent ON executions (parent) WHERE parent IS NOT NULL;",
        )?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
}

fn io_error(path: &Path, e: &std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::ReadOnly {
                path: path.to_path_buf(),
            }
        }
        std::io::ErrorKind::StorageFull => StoreError::Full {
            path: path.to_path_buf(),
        },
        _ => StoreError::Database {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

/// The store's error for a SQLite error on `path`.
fn error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::NotADatabase => StoreError::NotADatabase { path },
            ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                StoreError::ReadOnly { path }
            }
            ErrorCode::DiskFull => StoreError::Full { path },
            _ => StoreError::Database {
                path,
                message: e.to_string(),
            },
        },
        _ => StoreError::Database {
            path,
            message: e.to_string(),
        },
    }
}

/// What other processes commit to the file, noticed through SQLite's `data_version` (which
/// changes when another connection commits) and told to this process's watchers.
struct Others {
    work: Arc<tokio::sync::watch::Sender<u64>>,
    ended: Arc<tokio::sync::watch::Sender<u64>>,
    /// The `data_version` last read, and when.
    seen: Option<i64>,
    looked: std::time::Instant,
}

impl Others {
    /// Looks, if the last look was at least [`SqliteStore::NOTICE`] ago: a busy writer pays
    /// one clock read per batch.
    fn look_now_and_then(&mut self, conn: &Connection) {
        if self.looked.elapsed() >= SqliteStore::NOTICE {
            self.look(conn);
        }
    }

    fn look(&mut self, conn: &Connection) {
        self.looked = std::time::Instant::now();
        let version = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)));
        let Ok(version) = version else {
            return;
        };
        if self.seen.is_some_and(|seen| seen != version) {
            self.work.send_modify(|n| *n = n.wrapping_add(1));
            self.ended.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.seen = Some(version);
    }
}

/// The thread that owns the connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    /// Whether this store is the file's worker (else claims and checkpoints are refused).
    worker: bool,
    /// Set when SQLite rolled the whole transaction back (it does on a full disk, say): the
    /// batch's writes are all lost, and each is answered with this error.
    aborted: Option<StoreError>,
    /// Whether each write runs in a savepoint of its own (see [`Writer::run`]).
    savepoints: bool,
    /// Set when a write run without a savepoint failed after changing rows.
    partial: bool,
}

/// A claimed row, or why it cannot be read.
type Claimed = Result<ExecutionRecord, StoreError>;

/// What a write did, answered once its transaction has committed (or failed).
enum Wrote {
    Created(Result<Created, StoreError>),
    Version(Result<u64, StoreError>),
    Bool(Result<bool, StoreError>),
    Claimed(Result<Vec<Claimed>, StoreError>),
}

impl Wrote {
    /// Answers `request` (a write) with what it did, or with `failed` if its transaction did
    /// not commit.
    fn send(self, request: Request, failed: Option<&StoreError>) {
        fn or<T>(r: Result<T, StoreError>, failed: Option<&StoreError>) -> Result<T, StoreError> {
            failed.map_or(r, |e| Err(e.clone()))
        }
        match (request, self) {
            (Request::Create(_, tx), Wrote::Created(r)) => drop(tx.send(or(r, failed))),
            (Request::Checkpoint(_, tx) | Request::Amend(_, tx), Wrote::Version(r)) => {
                drop(tx.send(or(r, failed)))
            }
            (Request::Register(_, tx) | Request::Answer(_, tx), Wrote::Bool(r)) => {
                drop(tx.send(or(r, failed)))
            }
            (Request::Claim { reply, .. }, Wrote::Claimed(r)) => drop(reply.send(or(r, failed))),
            // Each write is answered with the kind of result it asks for (see `write`).
            (request, _) => fail(
                request,
                StoreError::Database {
                    path: PathBuf::new(),
                    message: "a write answered with another write's result".into(),
                },
            ),
        }
    }
}

impl Writer {
    fn new(conn: Connection, path: PathBuf, worker: bool) -> Self {
        conn.set_prepared_statement_cache_capacity(64);
        Writer {
            conn,
            path,
            worker,
            aborted: None,
            savepoints: false,
            partial: false,
        }
    }

    fn serve(mut self, requests: mpsc::Receiver<Request>, mut others: Others) {
        let mut batch = Vec::with_capacity(BATCH);
        others.look(&self.conn);
        loop {
            let first = match requests.recv_timeout(SqliteStore::NOTICE) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    others.look(&self.conn);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            batch.push(first);
            while batch.len() < BATCH {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.run(&mut batch);
            others.look_now_and_then(&self.conn);
        }
    }

    /// Runs a batch: reads first, answered at once outside any transaction (so they see only
    /// what is committed); then the writes in one transaction, answered after the commit.
    ///
    /// One refused write (a conflict, say) must not undo the others. The writes run first
    /// without savepoints, which cost each write a copy of every page it touches: a write
    /// refused before it changed anything (the common refusal: its row's version moved on)
    /// leaves nothing to undo. Only when a write fails after changing rows is the transaction
    /// rolled back and the batch run again, each write in a savepoint of its own.
    fn run(&mut self, batch: &mut Vec<Request>) {
        let mut writes = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            if request.writes() {
                writes.push(request);
            } else {
                self.any(request);
            }
        }
        if writes.is_empty() {
            return;
        }
        self.savepoints = false;
        let (mut wrote, mut committed) = self.transaction(&writes);
        if self.partial {
            self.savepoints = true;
            (wrote, committed) = self.transaction(&writes);
        }
        for (request, wrote) in writes.into_iter().zip(wrote) {
            wrote.send(request, committed.as_ref().err());
        }
    }

    /// Runs `writes` in one transaction and commits it, unless a write failed after changing
    /// rows outside a savepoint (`partial`: the transaction is rolled back).
    fn transaction(&mut self, writes: &[Request]) -> (Vec<Wrote>, Result<(), StoreError>) {
        let began = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| error(&self.path, e));
        self.aborted = None;
        self.partial = false;
        let mut wrote = Vec::with_capacity(writes.len());
        for request in writes {
            // After the transaction failed, the writes left fail with it.
            if let Some(e) = began.as_ref().err().or(self.aborted.as_ref()) {
                wrote.push(refused(request, e.clone()));
                continue;
            }
            wrote.push(self.write(request));
            if self.partial {
                let _ = self.conn.execute_batch("ROLLBACK");
                return (wrote, Ok(()));
            }
        }
        let committed = began.and_then(|()| match self.aborted.take() {
            Some(e) => Err(e),
            None => self
                .conn
                .execute_batch("COMMIT")
                .map_err(|e| error(&self.path, e)),
        });
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        (wrote, committed)
    }

    /// Runs a write: in a savepoint (kept if it succeeds, undone if not) when `savepoints`,
    /// else directly, noting in `partial` a failure that left rows changed.
    fn savepoint<T>(
        &mut self,
        f: impl FnOnce(&Connection, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let err = |e| error(&path, e);
        if !self.savepoints {
            let before = self.conn.total_changes();
            let r = f(&self.conn, &self.path);
            if let Err(e) = &r {
                if self.conn.is_autocommit() {
                    self.aborted = Some(e.clone());
                } else if self.conn.total_changes() != before {
                    self.partial = true;
                }
            }
            return r;
        }
        self.conn
            .prepare_cached("SAVEPOINT w")
            .and_then(|mut s| s.execute([]))
            .map_err(err)?;
        let r = f(&self.conn, &self.path);
        if let Err(e) = &r {
            if self.conn.is_autocommit() {
                // SQLite ended the transaction itself: nothing of this batch is written.
                self.aborted = Some(e.clone());
                return r;
            }
        }
        if r.is_err() {
            self.conn.execute_batch("ROLLBACK TO w").map_err(err)?;
        }
        self.conn
            .prepare_cached("RELEASE w")
            .and_then(|mut s| s.execute([]))
            .map_err(err)?;
        r
    }

    /// Runs a write request in the batch's transaction.
    fn write(&mut self, request: &Request) -> Wrote {
        if !self.worker && matches!(request, Request::Checkpoint(..) | Request::Claim { .. }) {
            return refused(
                request,
                StoreError::NotAWorker {
                    path: self.path.clone(),
                },
            );
        }
        match request {
            Request::Create(new, _) => Wrote::Created(self.savepoint(|c, p| create(c, p, new))),
            Request::Checkpoint(cp, _) | Request::Amend(cp, _) => {
                Wrote::Version(self.savepoint(|c, p| checkpoint(c, p, cp)))
            }
            Request::Register(d, _) => {
                Wrote::Bool(self.savepoint(|c, p| register(c, p, d)).map(|()| true))
            }
            Request::Answer(answer, _) => {
                Wrote::Bool(self.savepoint(|c, p| answer_token(c, p, answer)))
            }
            Request::Claim {
                machine,
                owner,
                now,
                lease_until,
                limit,
                ..
            } => Wrote::Claimed(
                self.savepoint(|c, p| claim(c, p, machine, owner, *now, *lease_until, *limit)),
            ),
            other => refused(
                other,
                StoreError::Database {
                    path: self.path.clone(),
                    message: "a read run as a write".into(),
                },
            ),
        }
    }

    /// Answers a read.
    fn any(&mut self, request: Request) {
        match request {
            Request::Definitions(machine, reply) => {
                let _ = reply.send(self.definitions(machine.as_deref()));
            }
            Request::Stats(machine, now, oldest, by_state, reply) => {
                let _ = reply.send(self.stats(machine.as_deref(), now, oldest, by_state));
            }
            Request::Overdue(machine, which, examples, reply) => {
                let _ = reply.send(self.overdue(machine.as_deref(), which, examples));
            }
            Request::EndedSince(machine, since, reply) => {
                let _ = reply.send(self.ended_since(machine.as_deref(), since));
            }
            Request::NextDue(machine, reply) => {
                let r = self
                    .conn
                    .prepare_cached(
                        "SELECT min(due_at) FROM executions WHERE machine = ?1 \
                         AND status IN ('running', 'waiting') AND lease_owner IS NULL",
                    )
                    .and_then(|mut s| s.query_row([machine], |r| r.get::<_, Option<i64>>(0)))
                    .map(|v| v.map(|v| v.max(0) as u64))
                    .map_err(|e| error(&self.path, e));
                let _ = reply.send(r);
            }
            Request::Get(id, reply) => {
                let r = self.read_records(
                    &format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"),
                    &[&id.to_string()],
                );
                let _ = reply.send(r.map(|mut v| v.pop()));
            }
            Request::Events(id, reply) => {
                let _ = reply.send(self.events(id));
            }
            Request::List(q, reply) => {
                let _ = reply.send(self.list(&q));
            }
            Request::Count(q, reply) => {
                let _ = reply.send(self.count(&q));
            }
            Request::Token(hash, reply) => {
                let r = read_tokens(&self.conn, &self.path, "secret_hash = ?1", params![hash]);
                let _ = reply.send(r.map(|mut v| v.pop()));
            }
            Request::WaitToken(id, step, attempt, reply) => {
                let r = read_tokens(
                    &self.conn,
                    &self.path,
                    "execution = ?1 AND step = ?2 AND attempt = ?3",
                    params![id.to_string(), step, attempt],
                );
                let _ = reply.send(r.map(|v| v.into_iter().next()));
            }
            // A write is run in a transaction of its own.
            write => self.run(&mut vec![write]),
        }
    }

    fn read_records(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| error(&self.path, e))?;
        let rows = stmt
            .query_map(args, |r| Ok(rows::record(r)))
            .map_err(|e| error(&self.path, e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| error(&self.path, e))??);
        }
        Ok(out)
    }

    fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let err = |e| error(&self.path, e);
        let (filter, args) = rows::list_sql(q, &SQLITE_LIST);
        let sql = format!(
            "SELECT {} FROM executions WHERE {filter}",
            rows::SUMMARY_COLUMNS
        );
        let args = sqlite_args(&args);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(args.as_slice(), |r| Ok(rows::summary(r)))
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(err)??);
        }
        Ok(rows::page(out, q.limit))
    }

    fn stats(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
        by_state: bool,
    ) -> Result<Stats, StoreError> {
        let err = |e| error(&self.path, e);
        let mut stats = Stats::default();
        let mut counts = self
            .conn
            .prepare_cached(&rows::fill(
                if by_state {
                    rows::STATE_COUNTS
                } else {
                    rows::STATUS_COUNTS
                },
                "executions",
                &[("{m}", "?1")],
            ))
            .map_err(err)?;
        let mut rows = counts.query([machine]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            stats.counts.push(state_count(
                r.get(0).map_err(err)?,
                r.get(1).map_err(err)?,
                &r.get::<_, String>(2).map_err(err)?,
                r.get(3).map_err(err)?,
            )?);
        }
        let (backlog, since): (i64, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT count(*), min(due_at) FROM executions \
                 WHERE (?1 IS NULL OR machine = ?1) AND status IN ('running', 'waiting') \
                 AND due_at <= ?2 AND (lease_owner IS NULL OR lease_expires <= ?2)",
            )
            .and_then(|mut s| {
                s.query_row(params![machine, ms(now)], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .map_err(err)?;
        stats.backlog = backlog.max(0) as u64;
        stats.backlog_since = since.map(|t| t.max(0) as Millis);
        let expired: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM executions WHERE (?1 IS NULL OR machine = ?1) \
                 AND status IN ('running', 'waiting') AND lease_owner IS NOT NULL \
                 AND lease_expires <= ?2",
            )
            .and_then(|mut s| s.query_row(params![machine, ms(now)], |r| r.get(0)))
            .map_err(err)?;
        stats.expired_leases = expired.max(0) as u64;
        let mut waits = self
            .conn
            .prepare_cached(&rows::fill(
                rows::OLDEST_WAITS,
                "executions",
                &[("{m}", "?1"), ("{n}", "?2")],
            ))
            .map_err(err)?;
        let found = waits
            .query_map(params![machine, oldest as i64], |r| Ok(rows::summary(r)))
            .map_err(err)?;
        for w in found {
            stats.oldest_waits.push(w.map_err(err)??);
        }
        Ok(stats)
    }

    fn count(&self, q: &ListQuery) -> Result<u64, StoreError> {
        let mut q = q.clone();
        q.after = None;
        let (filter, args) = rows::list_where(&q, &SQLITE_LIST);
        let args = sqlite_args(&args);
        self.conn
            .prepare_cached(&format!("SELECT count(*) FROM executions WHERE {filter}"))
            .and_then(|mut s| s.query_row(args.as_slice(), |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(|e| error(&self.path, e))
    }

    fn overdue(
        &self,
        machine: Option<&str>,
        which: Overdue,
        examples: usize,
    ) -> Result<Found, StoreError> {
        let err = |e| error(&self.path, e);
        let (condition, order, t) = rows::overdue_sql(which);
        // A SQLite worker's leases do not run out: `now` is the rule's time.
        let condition = condition.replace("{t}", "?2").replace("{now}", "?2");
        let filter = format!("({condition}) AND (?1 IS NULL OR machine = ?1)");
        let count: i64 = self
            .conn
            .prepare_cached(&format!("SELECT count(*) FROM executions WHERE {filter}"))
            .and_then(|mut s| s.query_row(params![machine, ms(t)], |r| r.get(0)))
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM executions WHERE {filter} ORDER BY {order}, id LIMIT ?3 + 0",
                rows::SUMMARY_COLUMNS
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(params![machine, ms(t), examples as i64], |r| {
                Ok(rows::summary(r))
            })
            .map_err(err)?;
        let mut found = Found {
            count: count.max(0) as u64,
            examples: Vec::new(),
        };
        for row in rows {
            found.examples.push(row.map_err(err)??);
        }
        Ok(found)
    }

    fn ended_since(
        &self,
        machine: Option<&str>,
        since: Millis,
    ) -> Result<Vec<StateCount>, StoreError> {
        let err = |e| error(&self.path, e);
        let sql = rows::fill(
            rows::ENDED_SINCE,
            "executions",
            &[("{since}", "?2"), ("{m}", "?1")],
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let mut rows = stmt.query(params![machine, ms(since)]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            out.push(state_count(
                r.get(0).map_err(err)?,
                r.get(1).map_err(err)?,
                &r.get::<_, String>(2).map_err(err)?,
                r.get(3).map_err(err)?,
            )?);
        }
        Ok(out)
    }

    fn definitions(&self, machine: Option<&str>) -> Result<Vec<StoredDefinition>, StoreError> {
        let err = |e| error(&self.path, e);
        let exists: bool = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'definitions'",
            )
            .and_then(|mut s| s.exists([]))
            .map_err(err)?;
        if !exists {
            // A file of schema 3, opened by a client before its worker upgraded it.
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT machine, fingerprint, definition, registered_at FROM definitions \
                 WHERE ?1 IS NULL OR machine = ?1 ORDER BY registered_at DESC, machine",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([machine], |r| {
                Ok(StoredDefinition {
                    machine: r.get(0)?,
                    fingerprint: r.get(1)?,
                    json: r.get(2)?,
                    registered_at: r.get::<_, i64>(3)?.max(0) as Millis,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    fn events(&self, id: ExecutionId) -> Result<Vec<StoredEvent>, StoreError> {
        let err = |e| error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, kind, state, detail FROM events WHERE execution = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = stmt.query([id.to_string()]).map_err(err)?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            events.push(rows::event(row, id)?);
        }
        Ok(events)
    }
}

/// A list query in SQLite. A name that begins with `p`: `>=` finds the first in the index,
/// `substr` checks. Ids among a JSON array: `json_each` (one parameter however many).
const SQLITE_LIST: rows::Dialect = rows::Dialect {
    param: |n| format!("?{n}"),
    starts_with: |p| format!("(name >= {p} AND substr(name, 1, length({p})) = {p})"),
    contains: |p| format!("instr(state, {p}) > 0"),
    among: |p| format!("id IN (SELECT value FROM json_each({p}))"),
};

/// A list query's parameters, as rusqlite binds them.
fn sqlite_args(args: &[rows::ListArg]) -> Vec<&dyn rusqlite::ToSql> {
    args.iter()
        .map(|a| match a {
            rows::ListArg::Text(t) => t as &dyn rusqlite::ToSql,
            rows::ListArg::Int(i) => i as &dyn rusqlite::ToSql,
        })
        .collect()
}

/// Answers a request whose transaction could not begin.
fn fail(request: Request, e: StoreError) {
    match request {
        Request::Create(_, r) => drop(r.send(Err(e))),
        Request::Checkpoint(_, r) | Request::Amend(_, r) => drop(r.send(Err(e))),
        Request::Register(_, r) => drop(r.send(Err(e))),
        Request::Definitions(_, r) => drop(r.send(Err(e))),
        Request::Stats(.., r) => drop(r.send(Err(e))),
        Request::Overdue(.., r) => drop(r.send(Err(e))),
        Request::EndedSince(.., r) => drop(r.send(Err(e))),
        Request::Claim { reply, .. } => drop(reply.send(Err(e))),
        Request::NextDue(_, r) => drop(r.send(Err(e))),
        Request::Get(_, r) => drop(r.send(Err(e))),
        Request::Events(_, r) => drop(r.send(Err(e))),
        Request::List(_, r) => drop(r.send(Err(e))),
        Request::Count(_, r) => drop(r.send(Err(e))),
        Request::Token(_, r) => drop(r.send(Err(e))),
        Request::Answer(_, r) => drop(r.send(Err(e))),
        Request::WaitToken(.., r) => drop(r.send(Err(e))),
    }
}

/// A write's result when it was refused with `e` (its kind as [`Writer::write`] gives it).
fn refused(request: &Request, e: StoreError) -> Wrote {
    match request {
        Request::Create(..) => Wrote::Created(Err(e)),
        Request::Checkpoint(..) | Request::Amend(..) => Wrote::Version(Err(e)),
        Request::Claim { .. } => Wrote::Claimed(Err(e)),
        _ => Wrote::Bool(Err(e)),
    }
}

fn opt_ms(v: Option<Millis>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn ms(v: Millis) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn create(c: &Connection, path: &Path, new: &NewExecution) -> Result<Created, StoreError> {
    let err = |e| error(path, e);
    let r = &new.record;
    let written = c
        .prepare_cached(&format!(
            "INSERT INTO executions ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 1, ?17, ?18, \
          ?19, ?20) \
         ON CONFLICT (machine, name) WHERE name IS NOT NULL DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                r.id.to_string(),
                r.machine,
                r.fingerprint,
                r.state_name,
                r.state,
                r.status.as_str(),
                r.waiting_for.map(WaitingFor::as_str),
                r.step,
                r.attempt,
                opt_ms(r.due_at),
                r.error,
                r.events,
                ms(r.created_at),
                ms(r.updated_at),
                r.lease_owner,
                opt_ms(r.lease_expires.filter(|&e| e != Millis::MAX)),
                r.name,
                r.claims,
                ms(r.entered_at),
                r.parent.map(|p| p.to_string()),
            ])
        })
        .map_err(err)?;
    if written == 0 {
        // Its name is taken: the execution that has it.
        let existing = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM executions WHERE machine = ?1 AND name = ?2"
            ))
            .and_then(|mut s| s.query_row(params![r.machine, r.name], |row| Ok(rows::record(row))))
            .map_err(err)??;
        return Ok(Created::Existing(Box::new(existing)));
    }
    insert_events(c, path, r.id, &new.events)?;
    if let Some(t) = &new.token {
        insert_token(c, path, t)?;
    }
    Ok(Created::New)
}

/// Statements that insert one to four events of an execution (a checkpoint has three or
/// four): one statement a checkpoint rather than one an event. The execution is `?1`; event
/// `k` from 0 is `?(2 + 5k)` to `?(6 + 5k)`.
const INSERT_EVENTS: [&str; 4] = [
    "INSERT INTO events (execution, seq, at, kind, state, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    "INSERT INTO events (execution, seq, at, kind, state, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6), (?1, ?7, ?8, ?9, ?10, ?11)",
    "INSERT INTO events (execution, seq, at, kind, state, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6), (?1, ?7, ?8, ?9, ?10, ?11), (?1, ?12, ?13, ?14, ?15, ?16)",
    "INSERT INTO events (execution, seq, at, kind, state, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6), (?1, ?7, ?8, ?9, ?10, ?11), (?1, ?12, ?13, ?14, ?15, ?16), (?1, ?17, ?18, ?19, ?20, ?21)",
];

fn insert_events(
    c: &Connection,
    path: &Path,
    id: ExecutionId,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    let err = |e| error(path, e);
    let id = id.to_string();
    for chunk in events.chunks(INSERT_EVENTS.len()) {
        let mut stmt = c
            .prepare_cached(INSERT_EVENTS[chunk.len() - 1])
            .map_err(err)?;
        stmt.raw_bind_parameter(1, &id).map_err(err)?;
        for (k, e) in chunk.iter().enumerate() {
            let at = 2 + 5 * k;
            stmt.raw_bind_parameter(at, e.seq).map_err(err)?;
            stmt.raw_bind_parameter(at + 1, ms(e.at_micros))
                .map_err(err)?;
            stmt.raw_bind_parameter(at + 2, &e.kind).map_err(err)?;
            stmt.raw_bind_parameter(at + 3, &e.state).map_err(err)?;
            stmt.raw_bind_parameter(at + 4, &e.detail).map_err(err)?;
        }
        stmt.raw_execute().map_err(err)?;
    }
    Ok(())
}

fn insert_token(c: &Connection, path: &Path, t: &TokenRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO tokens (secret_hash, execution, step, attempt, status, result) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.secret_hash,
            t.execution.to_string(),
            t.step,
            t.attempt,
            t.status.as_str(),
            t.result
        ])
    })
    .map(drop)
    .map_err(|e| error(path, e))
}

fn checkpoint(c: &Connection, path: &Path, cp: &Checkpoint) -> Result<u64, StoreError> {
    let err = |e| error(path, e);
    let r = &cp.record;
    let id = r.id.to_string();
    for (hash, status) in &cp.close_tokens {
        // Not if another token of the same wait was answered or closed: it decided.
        let changed = c
            .prepare_cached(
                "UPDATE tokens SET status = ?1 WHERE secret_hash = ?2 AND execution = ?3 \
                 AND status = 'open' AND NOT EXISTS (SELECT 1 FROM tokens o \
                 WHERE o.execution = tokens.execution AND o.step = tokens.step \
                 AND o.attempt = tokens.attempt AND o.status <> 'open')",
            )
            .and_then(|mut s| s.execute(params![status.as_str(), hash, id]))
            .map_err(err)?;
        if changed == 0 {
            // It was answered meanwhile: the writer must read it again.
            return Err(StoreError::Conflict { execution: r.id });
        }
    }
    let update = |sql: &str| {
        c.prepare_cached(sql).and_then(|mut s| {
            s.execute(params![
                r.fingerprint,
                r.state_name,
                r.state,
                r.status.as_str(),
                r.waiting_for.map(WaitingFor::as_str),
                r.step,
                r.attempt,
                opt_ms(r.due_at),
                r.error,
                r.events,
                ms(r.updated_at),
                r.lease_owner,
                opt_ms(r.lease_expires.filter(|&e| e != Millis::MAX)),
                id,
                i64::try_from(r.version).unwrap_or(i64::MAX),
                ms(r.entered_at),
            ])
        })
    };
    // Most checkpoints (a step of a running execution) leave its status and due time as they
    // are: written without them, the row's indexes on them are left alone (SQLite rewrites
    // an index entry whenever a column of it is set, to the same value or not).
    let mut changed = update(
        "UPDATE executions SET fingerprint = ?1, state_name = ?2, state = ?3, \
         waiting_for = ?5, step = ?6, attempt = ?7, error = ?9, events = ?10, \
         updated_at = ?11, lease_owner = ?12, lease_expires = ?13, entered_at = ?16, \
         version = version + 1 WHERE id = ?14 AND version = ?15 AND status = ?4 AND due_at IS ?8",
    )
    .map_err(err)?;
    if changed == 0 {
        changed = update(
            "UPDATE executions SET fingerprint = ?1, state_name = ?2, state = ?3, status = ?4, \
             waiting_for = ?5, step = ?6, attempt = ?7, due_at = ?8, error = ?9, events = ?10, \
             updated_at = ?11, lease_owner = ?12, lease_expires = ?13, entered_at = ?16, \
             version = version + 1 WHERE id = ?14 AND version = ?15",
        )
        .map_err(err)?;
    }
    if changed == 0 {
        let exists: bool = c
            .prepare_cached("SELECT 1 FROM executions WHERE id = ?1")
            .and_then(|mut s| s.exists([&id]))
            .map_err(err)?;
        return Err(if exists {
            StoreError::Conflict { execution: r.id }
        } else {
            StoreError::NotFound { execution: r.id }
        });
    }
    insert_events(c, path, r.id, &cp.events)?;
    if let Some(t) = &cp.new_token {
        insert_token(c, path, t)?;
    }
    // A wait whose token was answered before the wait was written is due at once.
    if r.waiting_for == Some(WaitingFor::Token) {
        c.prepare_cached(
            "UPDATE executions SET due_at = ?2 WHERE id = ?1 AND EXISTS (SELECT 1 FROM tokens \
             WHERE execution = ?1 AND step = ?3 AND attempt = ?4 \
             AND status IN ('completed', 'failed'))",
        )
        .and_then(|mut s| s.execute(params![id, ms(r.updated_at), r.step, r.attempt]))
        .map_err(err)?;
    }
    Ok(r.version + 1)
}

fn register(c: &Connection, path: &Path, d: &StoredDefinition) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO definitions (machine, fingerprint, definition, registered_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (machine, fingerprint) \
         DO UPDATE SET registered_at = excluded.registered_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            d.machine,
            d.fingerprint,
            d.json,
            ms(d.registered_at)
        ])
    })
    .map(drop)
    .map_err(|e| error(path, e))
}

fn answer_token(c: &Connection, path: &Path, a: &TokenAnswer) -> Result<bool, StoreError> {
    let err = |e| error(path, e);
    let id = a.execution.to_string();
    let changed = c
        .prepare_cached(
            "UPDATE tokens SET status = ?1, result = ?2 WHERE secret_hash = ?3 \
             AND execution = ?4 AND status = 'open' AND NOT EXISTS (SELECT 1 FROM tokens o \
             WHERE o.execution = tokens.execution AND o.step = tokens.step \
             AND o.attempt = tokens.attempt AND o.status <> 'open')",
        )
        .and_then(|mut s| s.execute(params![a.status.as_str(), a.result, a.secret_hash, id]))
        .map_err(err)?;
    if changed == 0 {
        return Ok(false);
    }
    c.prepare_cached(
        "UPDATE executions SET due_at = ?2 WHERE id = ?1 AND status = 'waiting' \
         AND waiting_for = 'token'",
    )
    .and_then(|mut s| s.execute(params![id, ms(a.now)]))
    .map_err(err)?;
    Ok(true)
}

/// A `LIMIT` bound as `?n + 0`, not `?n`: SQLite plans a statement whose limit is a bare
/// parameter with the bound value, and so prepares it again every time the value is bound
/// (which cost a busy worker 8% of its writer thread in the durable bench).
fn claim(
    c: &Connection,
    path: &Path,
    machine: &str,
    owner: &str,
    now: Millis,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "UPDATE executions SET lease_owner = ?1, lease_expires = ?2, version = version + 1, \
             claims = claims + 1 \
             WHERE id IN (SELECT id FROM executions WHERE machine = ?3 \
               AND status IN ('running', 'waiting') AND due_at <= ?4 \
               AND (lease_owner IS NULL OR lease_expires <= ?4) \
               ORDER BY due_at LIMIT ?5 + 0) \
             RETURNING {COLUMNS}"
        ))
        .map_err(|e| error(path, e))?;
    let lease = opt_ms(Some(lease_until).filter(|&e| e != Millis::MAX));
    let rows = stmt
        .query_map(params![owner, lease, machine, ms(now), limit as i64], |r| {
            Ok(rows::record(r))
        })
        .map_err(|e| error(path, e))?;
    // Each row decoded on its own: a bad one is claimed (and so set aside while this worker
    // lives) and returned as its error; the rest of the batch goes through.
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(|e| error(path, e))?);
    }
    Ok(out)
}

fn read_tokens(
    c: &Connection,
    path: &Path,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<TokenRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT secret_hash, execution, step, attempt, status, result FROM tokens \
             WHERE {filter} ORDER BY {DECISIVE_FIRST}"
        ))
        .map_err(|e| error(path, e))?;
    let rows = stmt
        .query_map(args, |r| Ok(rows::token(r)))
        .map_err(|e| error(path, e))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(|e| error(path, e))??);
    }
    Ok(out)
}

impl rows::Columns for Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, String> {
        self.get(i).map_err(|e| e.to_string())
    }

    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        self.get(i).map_err(|e| e.to_string())
    }
}

impl Store for SqliteStore {
    async fn create(&self, new: NewExecution) -> Result<Created, StoreError> {
        let unclaimed = new.record.lease_owner.is_none();
        let created = self.ask(|tx| Request::Create(new, tx)).await?;
        if unclaimed && created == Created::New {
            self.announce();
        }
        Ok(created)
    }

    // A checkpoint that releases its execution is not announced: the worker that wrote it is
    // the file's only one, and it looks at its due times when the execution leaves it.
    async fn checkpoint(&self, checkpoint: Checkpoint) -> Result<u64, StoreError> {
        let ends = checkpoint.record.status.is_final();
        let version = self.ask(|tx| Request::Checkpoint(checkpoint, tx)).await?;
        if ends {
            self.inner.ended.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(version)
    }

    async fn amend(&self, change: Checkpoint) -> Result<u64, StoreError> {
        let (ends, due) = (
            change.record.status.is_final(),
            change.record.lease_owner.is_none() && !change.record.status.is_final(),
        );
        let version = self.ask(|tx| Request::Amend(change, tx)).await?;
        if ends {
            self.inner.ended.send_modify(|n| *n = n.wrapping_add(1));
        }
        if due {
            self.announce();
        }
        Ok(version)
    }

    async fn stats(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<Stats, StoreError> {
        let machine = machine.map(str::to_owned);
        self.ask(|tx| Request::Stats(machine, now, oldest, true, tx))
            .await
    }

    async fn overview(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<Stats, StoreError> {
        let machine = machine.map(str::to_owned);
        self.ask(|tx| Request::Stats(machine, now, oldest, false, tx))
            .await
    }

    async fn overdue(
        &self,
        machine: Option<&str>,
        which: Overdue,
        examples: usize,
    ) -> Result<Found, StoreError> {
        let machine = machine.map(str::to_owned);
        self.ask(|tx| Request::Overdue(machine, which, examples, tx))
            .await
    }

    async fn ended_since(
        &self,
        machine: Option<&str>,
        since: Millis,
    ) -> Result<Vec<StateCount>, StoreError> {
        let machine = machine.map(str::to_owned);
        self.ask(|tx| Request::EndedSince(machine, since, tx)).await
    }

    async fn register(&self, definition: StoredDefinition) -> Result<(), StoreError> {
        self.ask(|tx| Request::Register(definition, tx))
            .await
            .map(drop)
    }

    async fn definitions(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<StoredDefinition>, StoreError> {
        let machine = machine.map(str::to_owned);
        self.ask(|tx| Request::Definitions(machine, tx)).await
    }

    async fn claim(
        &self,
        machine: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let (machine, owner) = (machine.to_owned(), owner.to_owned());
        self.ask(|reply| Request::Claim {
            machine,
            owner,
            now,
            lease_until,
            limit,
            reply,
        })
        .await
    }

    async fn next_due(&self, machine: &str) -> Result<Option<Millis>, StoreError> {
        let machine = machine.to_owned();
        self.ask(|tx| Request::NextDue(machine, tx)).await
    }

    async fn get(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        self.ask(|tx| Request::Get(id, tx)).await
    }

    async fn events(&self, id: ExecutionId) -> Result<Vec<StoredEvent>, StoreError> {
        self.ask(|tx| Request::Events(id, tx)).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.ask(|tx| Request::List(query, tx)).await
    }

    async fn count(&self, query: ListQuery) -> Result<u64, StoreError> {
        self.ask(|tx| Request::Count(query, tx)).await
    }

    async fn token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = secret_hash.to_owned();
        self.ask(|tx| Request::Token(hash, tx)).await
    }

    async fn answer_token(&self, answer: TokenAnswer) -> Result<bool, StoreError> {
        let answered = self.ask(|tx| Request::Answer(answer, tx)).await?;
        if answered {
            self.announce();
        }
        Ok(answered)
    }

    fn work(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.work.subscribe())
    }

    fn ended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.ended.subscribe())
    }

    async fn wait_token(
        &self,
        id: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.ask(|tx| Request::WaitToken(id, step, attempt, tx))
            .await
    }
}
