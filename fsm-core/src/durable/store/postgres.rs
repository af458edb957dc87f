//! The PostgreSQL store: several worker processes share executions. Claims take due rows with
//! `FOR UPDATE SKIP LOCKED` and a lease that the worker renews; a checkpoint names the row's
//! version, which every claim increases, so a worker whose lease was taken over cannot write
//! (the version is the fencing counter). New work and answered tokens are announced with
//! `NOTIFY`. Writes of concurrent executions are committed together.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Socket};

use super::{
    rows, rows::COLUMNS, rows::DECISIVE_FIRST, Checkpoint, Created, ExecutionRecord,
    ExecutionSummary, Found, ListQuery, Millis, NewExecution, Overdue, Page, StateCount, Stats,
    Store, StoreError, StoredDefinition, StoredEvent, TokenAnswer, TokenRecord, WaitingFor,
};
use crate::ExecutionId;

/// The schema this library writes and reads (in `fsm_meta`).
const SCHEMA_VERSION: i64 = 6;
const BATCH: usize = 2048;
const CHANNEL: &str = "fsm_work";
/// Told when executions ended.
const ENDED: &str = "fsm_ended";

const SCHEMA: &str = "
CREATE TABLE fsm_executions (
    id            TEXT PRIMARY KEY,
    machine       TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    state_name    TEXT NOT NULL,
    state         TEXT NOT NULL,
    status        TEXT NOT NULL,
    waiting_for   TEXT,
    step          BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    due_at        BIGINT,
    error         TEXT,
    events        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    lease_owner   TEXT,
    lease_expires BIGINT,
    version       BIGINT NOT NULL,
    name          TEXT,
    claims        BIGINT NOT NULL DEFAULT 0,
    entered_at    BIGINT NOT NULL DEFAULT 0,
    parent        TEXT
);
CREATE INDEX fsm_executions_parent ON fsm_executions (parent) WHERE parent IS NOT NULL;
CREATE INDEX fsm_executions_ended ON fsm_executions (updated_at)
    WHERE status NOT IN ('running', 'waiting');
CREATE UNIQUE INDEX fsm_executions_name ON fsm_executions (machine, name) WHERE name IS NOT NULL;
CREATE INDEX fsm_executions_started ON fsm_executions (machine, created_at, id);
CREATE INDEX fsm_executions_created ON fsm_executions (created_at, id);
CREATE INDEX fsm_executions_due ON fsm_executions (machine, due_at)
    WHERE status IN ('running', 'waiting');
CREATE INDEX fsm_executions_status ON fsm_executions (status, machine, created_at);
CREATE INDEX fsm_executions_lease ON fsm_executions (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE fsm_events (
    execution TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    at        BIGINT NOT NULL, -- microseconds since the execution started
    kind      TEXT NOT NULL,
    state     TEXT NOT NULL,
    detail    TEXT NOT NULL,
    PRIMARY KEY (execution, seq)
);
CREATE TABLE fsm_tokens (
    secret_hash TEXT PRIMARY KEY,
    execution TEXT NOT NULL,
    step      BIGINT NOT NULL,
    attempt   BIGINT NOT NULL,
    status    TEXT NOT NULL,
    result    TEXT
);
CREATE INDEX fsm_tokens_wait ON fsm_tokens (execution, step, attempt);
CREATE TABLE fsm_definitions (
    machine       TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    definition    TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    PRIMARY KEY (machine, fingerprint)
);
";

const TOKEN_COLUMNS: &str = "secret_hash, execution, step, attempt, status, result";

/// Durable executions in a PostgreSQL database, shared by any number of worker processes.
///
/// Cheap to clone. The connection string is libpq's (`postgres://user@host:port/db`); the
/// tables (`fsm_executions`, `fsm_events`, `fsm_tokens`, `fsm_meta`) are created on connect
/// and carry a schema version. Connections that break are made again; the writes under way
/// when one broke fail with [`StoreError::Unavailable`], and their executions go on from
/// their last checkpoint once their leases run out.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Shared>,
}

struct Shared {
    target: Target,
    writes: mpsc::UnboundedSender<Write>,
    reader: Mutex<Connection>,
    work: Arc<watch::Sender<u64>>,
    ended: Arc<watch::Sender<u64>>,
    lease: Duration,
    clock: ServerClock,
}

/// The server's clock, as seen from this process. Every comparison with "now" (claims, due
/// times, leases) is made in SQL with the server's `now()`, and leases are sent as durations
/// from it, so a worker or a client whose clock is off neither claims live executions nor
/// leaves due ones waiting. The due times the executor computes from its own clock (a retry
/// in 10 minutes, a wait's timeout) are moved onto the server's clock by the offset between
/// the two, measured when the store connects and again every few seconds, and rows read back
/// are moved onto this process's clock, so its timers fire when the server's time comes.
struct ServerClock {
    /// Server minus local, in milliseconds.
    offset: std::sync::atomic::AtomicI64,
    measured: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The server's time now, in Unix milliseconds, in SQL.
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";

impl ServerClock {
    const EVERY: Duration = Duration::from_secs(5);

    fn offset(&self) -> i64 {
        self.offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A time of this process's clock on the server's.
    fn to_server(&self, t: Millis) -> Millis {
        if t == Millis::MAX {
            return t;
        }
        (t as i64).saturating_add(self.offset()).max(0) as Millis
    }

    /// A time of the server's clock on this process's.
    fn to_local(&self, t: Millis) -> Millis {
        (t as i64).saturating_sub(self.offset()).max(0) as Millis
    }

    fn localize_summary(&self, e: &mut ExecutionSummary) {
        e.due_at = e.due_at.map(|t| self.to_local(t));
        e.created_at = self.to_local(e.created_at);
        e.updated_at = self.to_local(e.updated_at);
        e.entered_at = self.to_local(e.entered_at);
    }

    fn localize(&self, r: &mut ExecutionRecord) {
        r.due_at = r.due_at.map(|t| self.to_local(t));
        r.lease_expires = r.lease_expires.map(|t| self.to_local(t));
        r.created_at = self.to_local(r.created_at);
        r.updated_at = self.to_local(r.updated_at);
        r.entered_at = self.to_local(r.entered_at);
    }

    fn to_server_record(&self, r: &mut ExecutionRecord) {
        r.due_at = r.due_at.map(|t| self.to_server(t));
        r.lease_expires = r.lease_expires.map(|t| self.to_server(t));
        r.created_at = self.to_server(r.created_at);
        r.updated_at = self.to_server(r.updated_at);
        r.entered_at = self.to_server(r.entered_at);
    }

    fn due(&self) -> bool {
        let measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        measured.is_none_or(|at| at.elapsed() >= Self::EVERY)
    }

    /// Measures the offset with one query: the server's time against the middle of the
    /// round trip.
    async fn measure(&self, client: &Client) -> Result<(), StoreError> {
        let before = crate::runtime::step::unix_millis();
        let row = client
            .query_one(&format!("SELECT {NOW_MS}"), &[])
            .await
            .map_err(db)?;
        let after = crate::runtime::step::unix_millis();
        let server: i64 = row.try_get(0).map_err(db)?;
        let local = ((before + after) / 2) as i64;
        self.offset
            .store(server - local, std::sync::atomic::Ordering::Relaxed);
        *self.measured.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        Ok(())
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Write {
    Create(NewExecution, Reply<Created>),
    Checkpoint(Checkpoint, Reply<u64>),
    Answer(TokenAnswer, Reply<bool>),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        message: e.to_string(),
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() {
        return unavailable(e);
    }
    let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
    match code.as_str() {
        // disk_full, out of memory
        "53100" | "53200" => StoreError::Full {
            path: "postgresql".into(),
        },
        // read_only_sql_transaction
        "25006" => StoreError::ReadOnly {
            path: "postgresql".into(),
        },
        // insufficient_privilege
        "42501" => StoreError::Privileges {
            message: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        },
        // admin shutdown, cannot connect now, connection failures; a deadlock or a
        // serialization failure (the batch is run again)
        c if c.starts_with("57P") || c.starts_with("08") || c == "40P01" || c == "40001" => {
            // The server's words, not tokio-postgres's "db error".
            unavailable(match e.as_db_error() {
                Some(d) => format!("{} ({})", d.message(), d.code().code()),
                None => e.to_string(),
            })
        }
        _ => StoreError::Database {
            path: "postgresql".into(),
            message: match e.as_db_error() {
                Some(d) => format!("{} ({})", d.message(), d.code().code()),
                None => e.to_string(),
            },
        },
    }
}

/// A connection's messages (notifications), polled by whoever drives the connection.
type Messages = Box<
    dyn FnMut(
            &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>
        + Send,
>;
type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, Messages), tokio_postgres::Error>> + Send>>;
/// Connects to a URL with the TLS connector the user chose (or none), its type erased.
type Connector = Arc<dyn Fn(String) -> Connecting + Send + Sync>;

fn connector<T>(tls: T) -> Connector
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    Arc::new(move |url: String| -> Connecting {
        let tls = tls.clone();
        Box::pin(async move {
            let (client, mut connection) = tokio_postgres::connect(&url, tls).await?;
            let messages: Messages = Box::new(move |cx| connection.poll_message(cx));
            Ok((client, messages))
        })
    })
}

/// How [`PgStore::connect_with`] connects.
///
/// ```no_run
/// # async fn run() -> Result<(), fsm_core::StoreError> {
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use fsm_core::{PgOptions, PgStore};
/// use rustls::pki_types::{pem::PemObject as _, CertificateDer};
///
/// // TLS with rustls (crates tokio-postgres-rustls and rustls), trusting the system's roots
/// // or, as here, one certificate authority.
/// let mut roots = rustls::RootCertStore::empty();
/// let pem = std::fs::read("ca.pem").expect("the server's CA certificate");
/// for cert in CertificateDer::pem_slice_iter(&pem) {
///     roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
/// }
/// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
///     rustls::crypto::ring::default_provider(),
/// ))
/// .with_safe_default_protocol_versions()
/// .expect("TLS 1.2 and 1.3")
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
/// let store = PgStore::connect_with(
///     "postgres://app@db.internal/orders?sslmode=require",
///     PgOptions::new()
///         .tls(tls)
///         .schema("checkout")
///         .lease(Duration::from_secs(10)),
/// )
/// .await?;
/// # drop(store); Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgOptions {
    lease: Duration,
    schema: Option<String>,
    connector: Connector,
    tls: bool,
    read_only: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            lease: Duration::from_secs(10),
            schema: None,
            connector: connector(NoTls),
            tls: false,
            read_only: false,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("lease", &self.lease)
            .field("schema", &self.schema)
            .field("tls", &self.tls)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl PgOptions {
    /// Leases of 10 seconds, the role's `search_path`, no TLS.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a dead worker's executions wait before another worker takes them over
    /// (renewed every third of it by the worker that holds them). Default 10 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The schema that holds the tables (created on first connect if it is missing and the
    /// role may create it). Without it, the tables are wherever the role's `search_path`
    /// puts them (`public`, usually); `options=-c search_path=...` in the URL does the same.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Reads only: every session is read-only (`default_transaction_read_only`), so the
    /// server refuses any write ([`StoreError::ReadOnly`]); nothing is created or upgraded on
    /// connect (tables of an older schema are read as they are; none is an error). For tools
    /// that look: the `fsm` command line's reading commands, a console without actions.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Connects with TLS through `tls`, any of tokio-postgres's connectors
    /// (`tokio_postgres_rustls::MakeRustlsConnect`, `postgres_openssl::MakeTlsConnector`).
    /// The URL's `sslmode` means what it means to libpq: `prefer` (the default) tries TLS
    /// first and sends plain text only to a server that refuses TLS; `require` refuses such a
    /// server with [`StoreError::Tls`]; `disable` never tries. Without a connector, `prefer`
    /// is plain text and `require` fails with [`StoreError::Tls`].
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.connector = connector(tls);
        self.tls = true;
        self
    }
}

/// Where and how the store connects: the URL, the TLS connector, and what each session sets.
#[derive(Clone)]
struct Target {
    url: String,
    connector: Connector,
    session: String,
    has_tls: bool,
}

impl Target {
    fn new(url: &str, options: &PgOptions) -> Self {
        let mut session = SESSION.to_owned();
        if options.read_only {
            session.push_str("; SET default_transaction_read_only = on");
        }
        if let Some(schema) = &options.schema {
            session.push_str(&format!("; SET search_path TO {}", quote_ident(schema)));
        }
        Target {
            url: url.to_owned(),
            connector: Arc::clone(&options.connector),
            session,
            has_tls: options.tls,
        }
    }

    /// A connection, and its messages to poll (which drives it).
    async fn raw(&self) -> Result<(Client, Messages), StoreError> {
        (self.connector)(self.url.clone())
            .await
            .map_err(|e| connect_error(e, self.has_tls))
    }

    /// A session: connected, driven by a task of its own, set up as the store needs.
    async fn session(&self) -> Result<Client, StoreError> {
        let (client, mut messages) = self.raw().await?;
        tokio::spawn(async move {
            while let Some(Ok(_)) = std::future::poll_fn(|cx| messages(cx)).await {}
        });
        client.batch_execute(&self.session).await.map_err(db)?;
        Ok(client)
    }
}

/// An identifier quoted for SQL: `checkout` -> `"checkout"`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The store's error for a failed connection attempt: TLS trouble is [`StoreError::Tls`], for
/// trying again does not mend it.
fn connect_error(e: tokio_postgres::Error, has_tls: bool) -> StoreError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.as_db_error().is_none() && message.starts_with("error performing TLS handshake") {
        let hint = if has_tls {
            ""
        } else {
            " (sslmode=require needs a TLS connector: PgOptions::tls)"
        };
        return StoreError::Tls {
            message: format!("{message}{hint}"),
        };
    }
    db(e)
}

/// What every session of the store sets, whatever the database's or the role's defaults:
/// the isolation its SQL was written for. Claims (`FOR UPDATE SKIP LOCKED`), the version
/// fence of checkpoints and the row locks of answers rely on READ COMMITTED's rules (a
/// statement sees what committed before it began); under `serializable` or `repeatable read`
/// set database-wide, claims and checkpoints fail with serialization errors instead, and
/// steps run twice.
const SESSION: &str = "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// A connection made again after a break, no more often than a backoff allows: while the
/// server is away (restarting, recovering) its callers get `Unavailable` at once instead of
/// a connection attempt each, which would keep a recovering server busy. The client is
/// shared: readers run their queries on it at the same time (tokio-postgres pipelines them),
/// and hold the lock only to get it.
struct Connection {
    client: Option<Arc<Client>>,
    /// No attempt before this instant.
    not_before: Option<tokio::time::Instant>,
    delay: Duration,
}

impl Connection {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    const MAX_DELAY: Duration = Duration::from_secs(2);

    fn new(client: Client) -> Self {
        Connection {
            client: Some(Arc::new(client)),
            not_before: None,
            delay: Self::FIRST_DELAY,
        }
    }

    /// The connection, made again if it broke.
    async fn get(&mut self, target: &Target) -> Result<&mut Arc<Client>, StoreError> {
        if self.client.as_deref().is_none_or(Client::is_closed) {
            self.client = None;
            if let Some(at) = self.not_before {
                if tokio::time::Instant::now() < at {
                    return Err(unavailable(
                        "the database is away (the next attempt to connect is due later)",
                    ));
                }
            }
            match target.session().await {
                Ok(client) => {
                    self.client = Some(Arc::new(client));
                    (self.not_before, self.delay) = (None, Self::FIRST_DELAY);
                }
                Err(e) => {
                    self.not_before = Some(tokio::time::Instant::now() + self.delay);
                    self.delay = (self.delay * 2).min(Self::MAX_DELAY);
                    return Err(e);
                }
            }
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }

    /// The connection for the writer, its only user (a transaction needs it alone).
    async fn get_alone(&mut self, target: &Target) -> Result<&mut Client, StoreError> {
        Arc::get_mut(self.get(target).await?).ok_or(StoreError::Closed)
    }

    /// Drops `broken`, if it is still the connection.
    fn broke(&mut self, broken: &Arc<Client>) {
        if self.client.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            self.client = None;
        }
    }
}

impl PgStore {
    /// Connects to the database at `url`, creating the tables if they are not there, with
    /// leases of 10 seconds (renewed every 3 by the worker that holds them), without TLS.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PgOptions::new()).await
    }

    /// Connects with leases of `lease`: how long a dead worker's executions wait before
    /// another worker takes them over.
    pub async fn connect_with_lease(url: &str, lease: Duration) -> Result<Self, StoreError> {
        Self::connect_with(url, PgOptions::new().lease(lease)).await
    }

    /// Connects as `options` say: TLS, the schema, the lease.
    ///
    /// Creates only what is missing (the schema, the tables, on first connect): a role that
    /// may only read and write the tables connects once they exist. A missing privilege is
    /// [`StoreError::Privileges`].
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let target = Target::new(url, &options);
        let lease = options.lease;
        let mut client = target.session().await?;
        if options.read_only {
            check_readable(&client).await?;
        } else {
            prepare(&mut client, options.schema.as_deref()).await?;
        }
        let clock = ServerClock {
            offset: std::sync::atomic::AtomicI64::new(0),
            measured: std::sync::Mutex::new(None),
        };
        clock.measure(&client).await?;
        let work = Arc::new(watch::Sender::new(0));
        let ended = Arc::new(watch::Sender::new(0));
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(target.clone(), client, rx));
        tokio::spawn(listen(
            target.clone(),
            Arc::downgrade(&work),
            Arc::downgrade(&ended),
        ));
        let reader = Mutex::new(Connection::new(target.session().await?));
        Ok(PgStore {
            inner: Arc::new(Shared {
                target,
                writes,
                reader,
                work,
                ended,
                lease,
                clock,
            }),
        })
    }

    /// Rows read as records, on this process's clock.
    fn records(&self, rows: Vec<Row>) -> Result<Vec<ExecutionRecord>, StoreError> {
        rows.iter()
            .map(|r| {
                let mut record = rows::record(r)?;
                self.inner.clock.localize(&mut record);
                Ok(record)
            })
            .collect()
    }

    async fn write<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writes
            .send(write(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The rows `sql` answers on the reading connection, connecting again once if it broke.
    /// Counts (by `counts`: [`rows::STATE_COUNTS`] or [`rows::STATUS_COUNTS`]), the backlog,
    /// the oldest waits, leases that ran out.
    async fn counted(
        &self,
        machine: Option<&str>,
        _now: Millis,
        oldest: usize,
        counts: &str,
    ) -> Result<Stats, StoreError> {
        let clock = &self.inner.clock;
        let mut stats = Stats::default();
        let counts = self
            .rows(
                &rows::fill(counts, "fsm_executions", &[("{m}", "$1::text")]),
                &[&machine],
            )
            .await?;
        for r in &counts {
            stats.counts.push(pg_state_count(r)?);
        }
        // By the server's clock, as claims are made.
        let backlog = self
            .rows(
                &format!(
                    "SELECT count(*), min(due_at), \
                       count(*) FILTER (WHERE lease_owner IS NOT NULL) FROM fsm_executions \
                     WHERE ($1::text IS NULL OR machine = $1) \
                     AND status IN ('running', 'waiting') AND due_at <= {NOW_MS} \
                     AND (lease_owner IS NULL OR lease_expires <= {NOW_MS})"
                ),
                &[&machine],
            )
            .await?;
        if let Some(r) = backlog.first() {
            stats.backlog = r.try_get::<_, i64>(0).map_err(db)?.max(0) as u64;
            stats.backlog_since = r
                .try_get::<_, Option<i64>>(1)
                .map_err(db)?
                .map(|t| clock.to_local(t.max(0) as Millis));
        }
        let expired = self
            .rows(
                &format!(
                    "SELECT count(*) FROM fsm_executions WHERE lease_owner IS NOT NULL \
                     AND lease_expires <= {NOW_MS} AND ($1::text IS NULL OR machine = $1) \
                     AND status IN ('running', 'waiting')"
                ),
                &[&machine],
            )
            .await?;
        if let Some(r) = expired.first() {
            stats.expired_leases = r.try_get::<_, i64>(0).map_err(db)?.max(0) as u64;
        }
        let waits = self
            .rows(
                &rows::fill(
                    rows::OLDEST_WAITS,
                    "fsm_executions",
                    &[("{m}", "$1::text"), ("{n}", "$2")],
                ),
                &[&machine, &(oldest as i64)],
            )
            .await?;
        for r in &waits {
            let mut e = rows::summary(r)?;
            clock.localize_summary(&mut e);
            stats.oldest_waits.push(e);
        }
        Ok(stats)
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        for _ in 0..2 {
            let client = Arc::clone(
                self.inner
                    .reader
                    .lock()
                    .await
                    .get(&self.inner.target)
                    .await?,
            );
            match client.query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) if client.is_closed() || e.is_closed() => {
                    self.inner.reader.lock().await.broke(&client)
                }
                Err(e) => return Err(db(e)),
            }
        }
        Err(unavailable("the database connection broke twice"))
    }
}

/// Creates or checks the schema, under an advisory lock so that workers starting together
/// do not race.
///
/// Only what is missing is created, so that a role that may only read and write the tables
/// connects once they exist.
async fn prepare(client: &mut Client, schema: Option<&str>) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock(7146528)", &[])
        .await
        .map_err(db)?;
    if let Some(schema) = schema {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(db)?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
                .await
                .map_err(db)?;
        }
    }
    // Where the session's search_path puts it: the schema, if one was given.
    match stored_version(&tx).await? {
        None => {
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS fsm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )
            .await
            .map_err(db)?;
            tx.batch_execute(SCHEMA).await.map_err(db)?;
            tx.execute(
                "INSERT INTO fsm_meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION.to_string()],
            )
            .await
            .map_err(db)?;
        }
        Some(v) if v < SCHEMA_VERSION => migrate(&tx, v).await?,
        Some(_) => {}
    }
    tx.commit().await.map_err(db)
}

/// The schema version the session's tables were written with (`None`: no tables); an error
/// for a newer version, or tables that are not this library's.
async fn stored_version(c: &impl tokio_postgres::GenericClient) -> Result<Option<i64>, StoreError> {
    let meta = c
        .query_one("SELECT to_regclass('fsm_meta') IS NOT NULL", &[])
        .await
        .map_err(db)?
        .try_get::<_, bool>(0)
        .map_err(db)?;
    if !meta {
        return Ok(None);
    }
    let version: Option<String> = c
        .query_opt(
            "SELECT value FROM fsm_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(db)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db)?;
    match version.as_deref().map(str::parse::<i64>) {
        None => Ok(None),
        Some(Ok(v)) if v > SCHEMA_VERSION => Err(StoreError::NewerSchema {
            path: "postgresql".into(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(_)) => Err(StoreError::Foreign {
            path: "postgresql".into(),
        }),
    }
}

/// Checks, without writing, that the session sees tables this library can read.
async fn check_readable(client: &Client) -> Result<(), StoreError> {
    match stored_version(client).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::Database {
            path: "postgresql".into(),
            message: "no executions here: the database (in the session's search_path) has \
                      no fsm tables"
                .into(),
        }),
    }
}

/// Brings a database written by an earlier version up to [`SCHEMA_VERSION`], under the
/// advisory lock that [`prepare`] holds.
async fn migrate(tx: &tokio_postgres::Transaction<'_>, from: i64) -> Result<(), StoreError> {
    if from < 2 {
        // 2: a token's row keeps the SHA-256 of its secret (its 16 bytes), not the secret.
        // Tokens handed out before still answer: their secrets are hashed in place; one that
        // is not 32 hexadecimal digits never answered anything, and matches no hash.
        tx.batch_execute(
            "ALTER TABLE fsm_tokens RENAME COLUMN secret TO secret_hash; \
             UPDATE fsm_tokens SET secret_hash = encode(sha256(decode(secret_hash, 'hex')), 'hex') \
             WHERE secret_hash ~ '^[0-9a-f]{32}$'",
        )
        .await
        .map_err(db)?;
    }
    if from < 3 {
        // 3: executions may have a name, unique per machine, and count their claims; the
        // lists' order has an index; events' times are microseconds (were milliseconds).
        tx.batch_execute(
            "ALTER TABLE fsm_executions ADD COLUMN name TEXT, \
               ADD COLUMN claims BIGINT NOT NULL DEFAULT 0; \
             CREATE UNIQUE INDEX fsm_executions_name ON fsm_executions (machine, name) \
               WHERE name IS NOT NULL; \
             CREATE INDEX fsm_executions_started ON fsm_executions (machine, created_at, id); \
             UPDATE fsm_events SET at = at * 1000",
        )
        .await
        .map_err(db)?;
    }
    if from < 4 {
        // 4: workers register their machines' definitions, for tools without the code.
        // Executions know when their step began; a failure rate has an index. (The open
        // executions' questions read the `fsm_executions_due` rows: an index of their own
        // would cost every checkpoint.)
        tx.batch_execute(
            "CREATE TABLE fsm_definitions (machine TEXT NOT NULL, fingerprint TEXT NOT NULL, \
             definition TEXT NOT NULL, registered_at BIGINT NOT NULL, \
             PRIMARY KEY (machine, fingerprint)); \
             ALTER TABLE fsm_executions ADD COLUMN entered_at BIGINT NOT NULL DEFAULT 0; \
             UPDATE fsm_executions SET entered_at = updated_at; \
             CREATE INDEX fsm_executions_ended ON fsm_executions (updated_at) \
               WHERE status NOT IN ('running', 'waiting')",
        )
        .await
        .map_err(db)?;
    }
    if from < 5 {
        // 5: the list of every machine's executions, newest first, has an index (the
        // console's first page). Starts write it; checkpoints do not.
        tx.batch_execute("CREATE INDEX fsm_executions_created ON fsm_executions (created_at, id)")
            .await
            .map_err(db)?;
    }
    if from < 6 {
        // 6: the branches of a Parallel or Map state are executions of their own, linked to
        // their parent.
        tx.batch_execute(
            "ALTER TABLE fsm_executions ADD COLUMN parent TEXT; \
             CREATE INDEX fsm_executions_parent ON fsm_executions (parent) \
               WHERE parent IS NOT NULL",
        )
        .await
        .map_err(db)?;
    }
    tx.execute(
        "UPDATE fsm_meta SET value = $1 WHERE key = 'schema_version'",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Forwards `NOTIFY fsm_work` and `NOTIFY fsm_ended` to this process's receivers; listens
/// again after a break.
async fn listen(
    target: Target,
    work: std::sync::Weak<watch::Sender<u64>>,
    ended: std::sync::Weak<watch::Sender<u64>>,
) {
    loop {
        if work.strong_count() == 0 {
            return;
        }
        let Ok((client, mut messages)) = target.raw().await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Polling the connection's messages also drives it.
        let pump = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| messages(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if tx.send(n.channel() == ENDED).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        if client
            .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {ENDED}"))
            .await
            .is_ok()
        {
            loop {
                // Looks every second whether the store is gone, so that its session ends
                // with it even when no notification comes.
                let is_ended = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                    Ok(Some(is_ended)) => is_ended,
                    Ok(None) => break,
                    Err(_) if work.strong_count() == 0 => {
                        pump.abort();
                        return;
                    }
                    Err(_) => continue,
                };
                let to = if is_ended { &ended } else { &work };
                match to.upgrade() {
                    // Every receiver sees the change, whether it waits this instant or not.
                    Some(to) => to.send_modify(|n| *n = n.wrapping_add(1)),
                    None => {
                        pump.abort();
                        return;
                    }
                }
            }
        }
        pump.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The writer: takes every write waiting and commits them in one transaction, each in a
/// savepoint; connects again after a break (the batch under way fails as unavailable).
async fn writer(target: Target, client: Client, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut connection = Connection::new(client);
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // The same order in every worker's batches: fewer deadlocks between them.
        batch.sort_by_key(Write::execution);
        let mut result = Err(unavailable("not run"));
        // A batch that meets a deadlock, or a connection that broke, is run again.
        for retry in 0..6u32 {
            if retry > 0 {
                tokio::time::sleep(Duration::from_millis(10 << retry)).await;
            }
            result = match connection.get_alone(&target).await {
                Ok(client) => commit(client, &batch).await,
                Err(e) => Err(e),
            };
            if !matches!(result, Err(StoreError::Unavailable { .. })) {
                break;
            }
        }
        match result {
            Ok(outcomes) => {
                for (w, outcome) in batch.drain(..).zip(outcomes) {
                    reply(w, outcome);
                }
            }
            Err(e) => {
                for w in batch.drain(..) {
                    fail(w, e.clone());
                }
            }
        }
    }
}

/// What a write came to.
enum Outcome {
    Created(Result<Created, StoreError>),
    Version(Result<u64, StoreError>),
    Bool(Result<bool, StoreError>),
}

impl Write {
    fn execution(&self) -> ExecutionId {
        match self {
            Write::Create(n, _) => n.record.id,
            Write::Checkpoint(c, _) => c.record.id,
            Write::Answer(a, _) => a.execution,
        }
    }

    /// What this write, once it changed its row, tells other processes: whether it left
    /// work for any worker (an unclaimed start, a released execution, an answer), whether
    /// it ended an execution.
    fn announces(&self) -> (bool, bool) {
        match self {
            Write::Create(n, _) => (n.record.lease_owner.is_none(), false),
            Write::Checkpoint(c, _) => {
                let (r, ends) = (&c.record, c.record.status.is_final());
                (r.lease_owner.is_none() && !ends, ends)
            }
            Write::Answer(..) => (true, false),
        }
    }
}

impl Outcome {
    /// Whether the write changed its row (an answer to a token no longer open did not).
    fn changed(&self) -> bool {
        matches!(
            self,
            Outcome::Created(Ok(Created::New)) | Outcome::Version(Ok(_)) | Outcome::Bool(Ok(true))
        )
    }
}

fn reply(w: Write, outcome: Outcome) {
    match (w, outcome) {
        (Write::Create(_, r), Outcome::Created(o)) => drop(r.send(o)),
        (Write::Checkpoint(_, r), Outcome::Version(o)) => drop(r.send(o)),
        (Write::Answer(_, r), Outcome::Bool(o)) => drop(r.send(o)),
        (w, _) => fail(w, StoreError::Closed),
    }
}

fn fail(w: Write, e: StoreError) {
    match w {
        Write::Create(_, r) => drop(r.send(Err(e))),
        Write::Checkpoint(_, r) => drop(r.send(Err(e))),
        Write::Answer(_, r) => drop(r.send(Err(e))),
    }
}

/// A list query in PostgreSQL. Ids among a JSON array: `jsonb_array_elements_text` (one
/// parameter however many).
const PG_LIST: rows::Dialect = rows::Dialect {
    param: |n| format!("${n}"),
    starts_with: |p| format!("starts_with(name, {p})"),
    contains: |p| format!("strpos(state, {p}) > 0"),
    among: |p| format!("id IN (SELECT jsonb_array_elements_text({p}::text::jsonb))"),
};

/// A list query's parameters, as tokio-postgres binds them.
fn pg_args(args: &[rows::ListArg]) -> Vec<Param<'_>> {
    args.iter()
        .map(|a| match a {
            rows::ListArg::Text(t) => t as Param<'_>,
            rows::ListArg::Int(i) => i as Param<'_>,
        })
        .collect()
}

/// A `machine, state, status, count` row.
fn pg_state_count(r: &Row) -> Result<StateCount, StoreError> {
    rows::state_count(
        r.try_get(0).map_err(db)?,
        r.try_get(1).map_err(db)?,
        r.try_get(2).map_err(db)?,
        r.try_get(3).map_err(db)?,
    )
}

fn ms(v: Millis) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn opt_ms(v: Option<Millis>) -> Option<i64> {
    v.filter(|&v| v != Millis::MAX).map(ms)
}

/// Commits a batch. Plain checkpoints (no token to hand out or close, not waiting for one)
/// and plain creates go in one statement each for the whole batch; every other write, and
/// every write of a bulk statement that failed, in a savepoint of its own. Returns what each
/// write came to, once committed; `Err` if the transaction as a whole failed (`Unavailable`:
/// run it again).
async fn commit(client: &mut Client, batch: &[Write]) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = client.transaction().await.map_err(db)?;
    let mut done: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let (mut creates, mut checkpoints) = (Vec::new(), Vec::new());
    for (i, w) in batch.iter().enumerate() {
        // An execution written twice in one batch: the second write waits for the first.
        if !seen.insert(w.execution()) {
            continue;
        }
        match w {
            Write::Create(new, _) if new.token.is_none() => creates.push((i, new)),
            Write::Checkpoint(cp, _) if is_plain(cp) => checkpoints.push((i, cp)),
            _ => {}
        }
    }
    if !creates.is_empty() {
        let news: Vec<&NewExecution> = creates.iter().map(|&(_, new)| new).collect();
        let sp = tx.savepoint("bulk").await.map_err(db)?;
        let r = create_all(&sp, &news).await;
        finish(sp, &r).await?;
        if let Ok(created) = r {
            for (&(i, _), created) in creates.iter().zip(created) {
                done[i] = Some(Outcome::Created(Ok(created)));
            }
        }
    }
    if !checkpoints.is_empty() {
        let cps: Vec<&Checkpoint> = checkpoints.iter().map(|&(_, cp)| cp).collect();
        let sp = tx.savepoint("bulk").await.map_err(db)?;
        let r = checkpoint_all(&sp, &cps).await;
        finish(sp, &r).await?;
        if let Ok(outcomes) = r {
            for (&(i, _), outcome) in checkpoints.iter().zip(outcomes) {
                done[i] = Some(Outcome::Version(outcome));
            }
        }
    }
    for (w, slot) in batch.iter().zip(&mut done) {
        if slot.is_some() {
            continue;
        }
        let sp = tx.savepoint("w").await.map_err(db)?;
        *slot = Some(match w {
            Write::Create(new, _) => {
                let r = create(&sp, new).await;
                finish(sp, &r).await?;
                Outcome::Created(r)
            }
            Write::Checkpoint(cp, _) => {
                let r = checkpoint(&sp, cp).await;
                finish(sp, &r).await?;
                Outcome::Version(r)
            }
            Write::Answer(answer, _) => {
                let r = answer_token(&sp, answer).await;
                finish(sp, &r).await?;
                Outcome::Bool(r)
            }
        });
    }
    let done: Vec<Outcome> = done.into_iter().flatten().collect();
    // What the batch tells other processes, delivered when the transaction commits.
    let (mut work, mut ended) = (false, false);
    for (w, outcome) in batch.iter().zip(&done) {
        if outcome.changed() {
            let (more_work, ends) = w.announces();
            (work, ended) = (work || more_work, ended || ends);
        }
    }
    let notify: Vec<String> = [(work, CHANNEL), (ended, ENDED)]
        .into_iter()
        .filter(|&(on, _)| on)
        .map(|(_, channel)| format!("NOTIFY {channel}"))
        .collect();
    if !notify.is_empty() {
        tx.batch_execute(&notify.join("; ")).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(done)
}

/// Whether a checkpoint only moves its row and appends events.
fn is_plain(cp: &Checkpoint) -> bool {
    cp.new_token.is_none()
        && cp.close_tokens.is_empty()
        && cp.record.waiting_for != Some(WaitingFor::Token)
}

/// A statement's parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// The columns of [`RowColumns::params`], as the bulk statements name them, and their types.
const ROW_NAMES: &str = "id, fingerprint, state_name, state, status, waiting_for, step, \
    attempt, due_at, error, events, updated_at, lease_owner, lease_expires, entered_at";
const ROW_TYPES: [&str; 15] = [
    "text", "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "text", "bigint",
    "bigint", "text", "bigint", "bigint",
];
/// The types of [`EventColumns::params`].
const EVENT_TYPES: [&str; 6] = ["text", "bigint", "bigint", "text", "text", "text"];

/// `unnest($first::type[], ...)`: arrays bound from parameter `first` on, as rows.
fn unnest<'a>(first: usize, types: impl IntoIterator<Item = &'a &'a str>) -> String {
    let arrays: Vec<String> = types
        .into_iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!("unnest({})", arrays.join(", "))
}

/// The events of several executions as columns, for `unnest`.
#[derive(Default)]
struct EventColumns<'a> {
    execution: Vec<String>,
    seq: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<&'a str>,
    state: Vec<&'a str>,
    detail: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// The columns, in the order of [`EVENT_TYPES`].
    fn params(&self) -> [Param<'_>; 6] {
        [
            &self.execution,
            &self.seq,
            &self.at,
            &self.kind,
            &self.state,
            &self.detail,
        ]
    }

    fn push(&mut self, id: ExecutionId, events: &'a [StoredEvent]) {
        for e in events {
            self.execution.push(id.to_string());
            self.seq.push(i64::from(e.seq));
            self.at.push(ms(e.at_micros));
            self.kind.push(&e.kind);
            self.state.push(&e.state);
            self.detail.push(&e.detail);
        }
    }
}

/// Creates executions that hand out no token, in one statement: those whose name their
/// machine's executions already have (in the database, or earlier in `news`) are not
/// written, and come back as the execution that has it.
async fn create_all(
    c: &tokio_postgres::Transaction<'_>,
    news: &[&NewExecution],
) -> Result<Vec<Created>, StoreError> {
    let rows = RowColumns::new(news.iter().map(|n| &n.record));
    let mut events = EventColumns::default();
    for n in news {
        events.push(n.record.id, &n.events);
    }
    let created: Vec<i64> = news.iter().map(|n| ms(n.record.created_at)).collect();
    let machine: Vec<&str> = news.iter().map(|n| n.record.machine.as_str()).collect();
    let name: Vec<Option<&str>> = news.iter().map(|n| n.record.name.as_deref()).collect();
    let claims: Vec<i64> = news.iter().map(|n| i64::from(n.record.claims)).collect();
    let parent: Vec<Option<String>> = news
        .iter()
        .map(|n| n.record.parent.map(|p| p.to_string()))
        .collect();
    // `WHERE true`: so that `ON CONFLICT` is not read as a join's `ON`.
    let sql = format!(
        "WITH rows AS (INSERT INTO fsm_executions ({COLUMNS}) \
         SELECT id, machine, fingerprint, state_name, state, status, waiting_for, step, attempt, \
           due_at, error, events, created_at, updated_at, lease_owner, lease_expires, 1, name, \
           claims, entered_at, parent \
         FROM {} AS i({ROW_NAMES}, created_at, machine, name, claims, parent) WHERE true \
         ON CONFLICT (machine, name) WHERE name IS NOT NULL DO NOTHING RETURNING id), \
         logged AS (INSERT INTO fsm_events (execution, seq, at, kind, state, detail) \
           SELECT ev.* FROM {} AS ev(execution, seq, at, kind, state, detail) \
           WHERE ev.execution IN (SELECT id FROM rows)) \
         SELECT id FROM rows",
        unnest(
            1,
            ROW_TYPES
                .iter()
                .chain(&["bigint", "text", "text", "bigint", "text"])
        ),
        unnest(21, &EVENT_TYPES),
    );
    let mut params = rows.params().to_vec();
    params.extend([&created as Param, &machine, &name, &claims, &parent]);
    params.extend(events.params());
    let written = c.query(&sql, &params).await.map_err(db)?;
    let written: std::collections::HashSet<String> = written.iter().map(|r| r.get(0)).collect();
    let mut out = Vec::with_capacity(news.len());
    for (n, id) in news.iter().zip(&rows.id) {
        if written.contains(id) {
            out.push(Created::New);
            continue;
        }
        // Its name is taken (committed by now: a conflicting insert waits for the other's
        // commit, and each statement here sees what is committed).
        let sql = format!("SELECT {COLUMNS} FROM fsm_executions WHERE machine = $1 AND name = $2");
        let row = c
            .query_opt(&sql, &[&n.record.machine, &n.record.name])
            .await
            .map_err(db)?
            .ok_or(StoreError::Conflict {
                execution: n.record.id,
            })?;
        out.push(Created::Existing(Box::new(rows::record(&row)?)));
    }
    Ok(out)
}

/// The columns a checkpoint writes, for several rows, for `unnest`.
struct RowColumns<'a> {
    id: Vec<String>,
    fingerprint: Vec<&'a str>,
    state_name: Vec<&'a str>,
    state: Vec<&'a str>,
    status: Vec<&'static str>,
    waiting_for: Vec<Option<&'static str>>,
    step: Vec<i64>,
    attempt: Vec<i64>,
    due_at: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    events: Vec<i64>,
    updated_at: Vec<i64>,
    lease_owner: Vec<Option<&'a str>>,
    lease_expires: Vec<Option<i64>>,
    entered_at: Vec<i64>,
    version: Vec<i64>,
}

impl<'a> RowColumns<'a> {
    /// The columns but `version`, in the order of [`ROW_NAMES`].
    fn params(&self) -> [Param<'_>; 15] {
        [
            &self.id,
            &self.fingerprint,
            &self.state_name,
            &self.state,
            &self.status,
            &self.waiting_for,
            &self.step,
            &self.attempt,
            &self.due_at,
            &self.error,
            &self.events,
            &self.updated_at,
            &self.lease_owner,
            &self.lease_expires,
            &self.entered_at,
        ]
    }

    fn new(records: impl ExactSizeIterator<Item = &'a ExecutionRecord>) -> Self {
        let n = records.len();
        let mut c = RowColumns {
            id: Vec::with_capacity(n),
            fingerprint: Vec::with_capacity(n),
            state_name: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            waiting_for: Vec::with_capacity(n),
            step: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            due_at: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            updated_at: Vec::with_capacity(n),
            lease_owner: Vec::with_capacity(n),
            lease_expires: Vec::with_capacity(n),
            entered_at: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
        };
        for r in records {
            c.id.push(r.id.to_string());
            c.fingerprint.push(&r.fingerprint);
            c.state_name.push(&r.state_name);
            c.state.push(&r.state);
            c.status.push(r.status.as_str());
            c.waiting_for.push(r.waiting_for.map(WaitingFor::as_str));
            c.step.push(i64::from(r.step));
            c.attempt.push(i64::from(r.attempt));
            c.due_at.push(opt_ms(r.due_at));
            c.error.push(r.error.as_deref());
            c.events.push(i64::from(r.events));
            c.updated_at.push(ms(r.updated_at));
            c.lease_owner.push(r.lease_owner.as_deref());
            c.lease_expires.push(opt_ms(r.lease_expires));
            c.entered_at.push(ms(r.entered_at));
            c.version.push(i64::try_from(r.version).unwrap_or(i64::MAX));
        }
        c
    }
}

/// Applies plain checkpoints in one statement: each row moves if its version is still the one
/// its writer read, and only moved rows get their events. Returns each checkpoint's outcome.
async fn checkpoint_all(
    c: &tokio_postgres::Transaction<'_>,
    cps: &[&Checkpoint],
) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    let rows = RowColumns::new(cps.iter().map(|cp| &cp.record));
    let mut events = EventColumns::default();
    for cp in cps {
        events.push(cp.record.id, &cp.events);
    }
    let sql = format!(
        "WITH moved AS (UPDATE fsm_executions e SET fingerprint = i.fingerprint, \
           state_name = i.state_name, state = i.state, status = i.status, \
           waiting_for = i.waiting_for, step = i.step, attempt = i.attempt, due_at = i.due_at, \
           error = i.error, events = i.events, updated_at = i.updated_at, \
           lease_owner = i.lease_owner, lease_expires = i.lease_expires, \
           entered_at = i.entered_at, version = e.version + 1 \
         FROM {} AS i({ROW_NAMES}, version) \
         WHERE e.id = i.id AND e.version = i.version RETURNING e.id), \
         logged AS (INSERT INTO fsm_events (execution, seq, at, kind, state, detail) \
           SELECT ev.* FROM {} AS ev(execution, seq, at, kind, state, detail) \
           WHERE ev.execution IN (SELECT id FROM moved)) \
         SELECT id FROM moved",
        unnest(1, ROW_TYPES.iter().chain(&["bigint"])),
        unnest(17, &EVENT_TYPES),
    );
    let mut params = rows.params().to_vec();
    params.push(&rows.version);
    params.extend(events.params());
    let moved = c.query(&sql, &params).await.map_err(db)?;
    let moved: std::collections::HashSet<String> = moved.iter().map(|r| r.get(0)).collect();
    // The rows that did not move: taken over (they exist) or gone.
    let stuck: Vec<&String> = rows.id.iter().filter(|id| !moved.contains(*id)).collect();
    let existing: std::collections::HashSet<String> = if stuck.is_empty() {
        Default::default()
    } else {
        c.query(
            "SELECT id FROM fsm_executions WHERE id = ANY($1)",
            &[&stuck],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    Ok(cps
        .iter()
        .zip(&rows.id)
        .map(|(cp, id)| {
            let execution = cp.record.id;
            if moved.contains(id) {
                Ok(cp.record.version + 1)
            } else if existing.contains(id) {
                Err(StoreError::Conflict { execution })
            } else {
                Err(StoreError::NotFound { execution })
            }
        })
        .collect())
}

/// Keeps or undoes a savepoint by its write's result. A broken connection fails the batch.
async fn finish<T>(
    sp: tokio_postgres::Transaction<'_>,
    r: &Result<T, StoreError>,
) -> Result<(), StoreError> {
    match r {
        Ok(_) => sp.commit().await.map_err(db),
        Err(e @ StoreError::Unavailable { .. }) => Err(e.clone()),
        Err(_) => sp.rollback().await.map_err(db),
    }
}

/// Creates one execution, and its first token if it hands one out.
async fn create(
    c: &tokio_postgres::Transaction<'_>,
    new: &NewExecution,
) -> Result<Created, StoreError> {
    let created = create_all(c, &[new]).await?.pop().unwrap_or(Created::New);
    if let (Created::New, Some(t)) = (&created, &new.token) {
        insert_token(c, t).await?;
    }
    Ok(created)
}

async fn insert_token(
    c: &tokio_postgres::Transaction<'_>,
    t: &TokenRecord,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO fsm_tokens (secret_hash, execution, step, attempt, status, result) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &t.secret_hash,
            &t.execution.to_string(),
            &i64::from(t.step),
            &i64::from(t.attempt),
            &t.status.as_str(),
            &t.result,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

async fn checkpoint(
    c: &tokio_postgres::Transaction<'_>,
    cp: &Checkpoint,
) -> Result<u64, StoreError> {
    let r = &cp.record;
    let id = r.id.to_string();
    if !cp.close_tokens.is_empty() {
        // The execution's row first, as an answer takes it: of a close and an answer through
        // another token of the same wait, the second to take it sees the first.
        c.execute(
            "SELECT 1 FROM fsm_executions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db)?;
    }
    for (hash, status) in &cp.close_tokens {
        // Not if another token of the same wait was answered or closed: it decided.
        let changed = c
            .execute(
                "UPDATE fsm_tokens SET status = $1 WHERE secret_hash = $2 AND execution = $3 \
                 AND status = 'open' AND NOT EXISTS (SELECT 1 FROM fsm_tokens o \
                 WHERE o.execution = fsm_tokens.execution AND o.step = fsm_tokens.step \
                 AND o.attempt = fsm_tokens.attempt AND o.status <> 'open')",
                &[&status.as_str(), hash, &id],
            )
            .await
            .map_err(db)?;
        if changed == 0 {
            return Err(StoreError::Conflict { execution: r.id });
        }
    }
    let version = checkpoint_all(c, &[cp])
        .await?
        .pop()
        .ok_or(StoreError::Closed)??;
    if let Some(t) = &cp.new_token {
        insert_token(c, t).await?;
    }
    if r.waiting_for == Some(WaitingFor::Token) {
        c.execute(
            "UPDATE fsm_executions SET due_at = $2 WHERE id = $1 AND EXISTS (SELECT 1 FROM fsm_tokens \
             WHERE execution = $1 AND step = $3 AND attempt = $4 \
             AND status IN ('completed', 'failed'))",
            &[&id, &ms(r.updated_at), &i64::from(r.step), &i64::from(r.attempt)],
        )
        .await
        .map_err(db)?;
    }
    Ok(version)
}

async fn answer_token(
    c: &tokio_postgres::Transaction<'_>,
    a: &TokenAnswer,
) -> Result<bool, StoreError> {
    let id = a.execution.to_string();
    // The execution's row first: a checkpoint that makes it wait either commits before this
    // (and is then made due here) or after (and sees the answer).
    c.execute(
        "SELECT 1 FROM fsm_executions WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await
    .map_err(db)?;
    let changed = c
        .execute(
            "UPDATE fsm_tokens SET status = $1, result = $2 WHERE secret_hash = $3 \
             AND execution = $4 AND status = 'open' AND NOT EXISTS (SELECT 1 FROM fsm_tokens o \
             WHERE o.execution = fsm_tokens.execution AND o.step = fsm_tokens.step \
             AND o.attempt = fsm_tokens.attempt AND o.status <> 'open')",
            &[&a.status.as_str(), &a.result, &a.secret_hash, &id],
        )
        .await
        .map_err(db)?;
    if changed == 0 {
        return Ok(false);
    }
    // Due at once by the server's clock (not the answering client's).
    c.execute(
        &format!(
            "UPDATE fsm_executions SET due_at = {NOW_MS} WHERE id = $1 AND status = 'waiting' \
             AND waiting_for = 'token'"
        ),
        &[&id],
    )
    .await
    .map_err(db)?;
    Ok(true)
}

impl rows::Columns for Row {
    fn text(&self, i: usize) -> Result<Option<String>, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }

    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
}

fn tokens(rows: Vec<Row>) -> Result<Vec<TokenRecord>, StoreError> {
    rows.iter().map(rows::token).collect()
}

impl Store for PgStore {
    async fn create(&self, mut new: NewExecution) -> Result<Created, StoreError> {
        self.inner.clock.to_server_record(&mut new.record);
        let mut created = self.write(|tx| Write::Create(new, tx)).await?;
        if let Created::Existing(row) = &mut created {
            self.inner.clock.localize(row);
        }
        Ok(created)
    }

    async fn checkpoint(&self, mut checkpoint: Checkpoint) -> Result<u64, StoreError> {
        self.inner.clock.to_server_record(&mut checkpoint.record);
        self.write(|tx| Write::Checkpoint(checkpoint, tx)).await
    }

    async fn claim(
        &self,
        machine: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Result<ExecutionRecord, StoreError>>, StoreError> {
        if self.inner.clock.due() {
            let client = Arc::clone(
                self.inner
                    .reader
                    .lock()
                    .await
                    .get(&self.inner.target)
                    .await?,
            );
            self.inner.clock.measure(&client).await?;
        }
        // On the server's clock: what is due by its time, held for the lease from its time.
        let sql = format!(
            "UPDATE fsm_executions SET lease_owner = $1, lease_expires = {NOW_MS} + $2, \
             version = version + 1, claims = claims + 1 \
             WHERE id IN (SELECT id FROM fsm_executions WHERE machine = $3 \
               AND status IN ('running', 'waiting') AND due_at <= {NOW_MS} \
               AND (lease_owner IS NULL OR lease_expires <= {NOW_MS}) \
               ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        );
        let lease = (lease_until != Millis::MAX).then(|| ms(lease_until.saturating_sub(now)));
        let limit = limit as i64;
        let rows = self.rows(&sql, &[&owner, &lease, &machine, &limit]).await?;
        let claimed: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut record = rows::record(r)?;
                self.inner.clock.localize(&mut record);
                Ok(record)
            })
            .collect();
        // A row that cannot be read is held until released (no expiry), so that no worker
        // claims it again when the lease would have run out: it is reported once.
        let bad: Vec<String> = claimed
            .iter()
            .filter_map(|r| match r {
                Err(StoreError::Corrupt {
                    execution: Some(id),
                    ..
                }) => Some(id.to_string()),
                _ => None,
            })
            .collect();
        if !bad.is_empty() {
            self.rows(
                "UPDATE fsm_executions SET lease_expires = NULL \
                 WHERE id = ANY($1) AND lease_owner = $2 RETURNING id",
                &[&bad, &owner],
            )
            .await?;
        }
        Ok(claimed)
    }

    async fn next_due(&self, machine: &str) -> Result<Option<Millis>, StoreError> {
        let rows = self
            .rows(
                "SELECT min(CASE WHEN due_at IS NULL THEN NULL \
                 WHEN lease_owner IS NULL THEN due_at \
                 ELSE greatest(due_at, lease_expires) END) FROM fsm_executions \
                 WHERE machine = $1 AND status IN ('running', 'waiting') \
                 AND (lease_owner IS NULL OR lease_expires IS NOT NULL)",
                &[&machine],
            )
            .await?;
        let first = match rows.first() {
            Some(row) => row.try_get::<_, Option<i64>>(0).map_err(db)?,
            None => None,
        };
        Ok(first.map(|v| self.inner.clock.to_local(v.max(0) as u64)))
    }

    // By the server's clock, as claims are made: a row just started is due, whatever the
    // offset between the clocks measured a moment ago.
    async fn due_now(&self, machine: &str, _now: Millis) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM fsm_executions WHERE machine = $1 \
             AND status IN ('running', 'waiting') AND due_at <= {NOW_MS} \
             AND (lease_owner IS NULL OR lease_expires <= {NOW_MS}))"
        );
        let rows = self.rows(&sql, &[&machine]).await?;
        match rows.first() {
            Some(row) => row.try_get::<_, bool>(0).map_err(db),
            None => Ok(false),
        }
    }

    async fn get(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM fsm_executions WHERE id = $1");
        Ok(self
            .records(self.rows(&sql, &[&id.to_string()]).await?)?
            .pop())
    }

    async fn events(&self, id: ExecutionId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, at, kind, state, detail FROM fsm_events WHERE execution = $1 \
                 ORDER BY seq",
                &[&id.to_string()],
            )
            .await?;
        rows.iter().map(|r| rows::event(r, id)).collect()
    }

    async fn list(&self, mut query: ListQuery) -> Result<Page, StoreError> {
        let clock = &self.inner.clock;
        // Times on the server's clock, as stored; cursors carry stored times as they are.
        query.started_after = query.started_after.map(|t| clock.to_server(t));
        query.started_before = query.started_before.map(|t| clock.to_server(t));
        let (filter, args) = rows::list_sql(&query, &PG_LIST);
        let sql = format!(
            "SELECT {} FROM fsm_executions WHERE {filter}",
            rows::SUMMARY_COLUMNS
        );
        let found = self.rows(&sql, &pg_args(&args)).await?;
        let summaries = found
            .iter()
            .map(rows::summary)
            .collect::<Result<Vec<_>, _>>()?;
        let mut page = rows::page(summaries, query.limit);
        for e in &mut page.executions {
            clock.localize_summary(e);
        }
        Ok(page)
    }

    async fn count(&self, mut query: ListQuery) -> Result<u64, StoreError> {
        let clock = &self.inner.clock;
        query.after = None;
        query.started_after = query.started_after.map(|t| clock.to_server(t));
        query.started_before = query.started_before.map(|t| clock.to_server(t));
        let (filter, args) = rows::list_where(&query, &PG_LIST);
        let sql = format!("SELECT count(*) FROM fsm_executions WHERE {filter}");
        let found = self.rows(&sql, &pg_args(&args)).await?;
        match found.first() {
            Some(r) => Ok(r.try_get::<_, i64>(0).map_err(db)?.max(0) as u64),
            None => Ok(0),
        }
    }

    async fn stats(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<Stats, StoreError> {
        self.counted(machine, now, oldest, rows::STATE_COUNTS).await
    }

    async fn overview(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<Stats, StoreError> {
        self.counted(machine, now, oldest, rows::STATUS_COUNTS)
            .await
    }

    async fn overdue(
        &self,
        machine: Option<&str>,
        which: Overdue,
        examples: usize,
    ) -> Result<Found, StoreError> {
        let clock = &self.inner.clock;
        let (condition, order, t) = rows::overdue_sql(which);
        let condition = condition.replace("{t}", "$2").replace("{now}", NOW_MS);
        let filter = format!("({condition}) AND ($1::text IS NULL OR machine = $1)");
        let t = ms(clock.to_server(t));
        let count = self
            .rows(
                &format!("SELECT count(*) FROM fsm_executions WHERE {filter}"),
                &[&machine, &t],
            )
            .await?;
        let count = match count.first() {
            Some(r) => r.try_get::<_, i64>(0).map_err(db)?.max(0) as u64,
            None => 0,
        };
        let found = self
            .rows(
                &format!(
                    "SELECT {} FROM fsm_executions WHERE {filter} ORDER BY {order}, id LIMIT $3",
                    rows::SUMMARY_COLUMNS
                ),
                &[&machine, &t, &(examples as i64)],
            )
            .await?;
        let mut out = Found {
            count,
            examples: Vec::with_capacity(found.len()),
        };
        for r in &found {
            let mut e = rows::summary(r)?;
            clock.localize_summary(&mut e);
            out.examples.push(e);
        }
        Ok(out)
    }

    async fn ended_since(
        &self,
        machine: Option<&str>,
        since: Millis,
    ) -> Result<Vec<StateCount>, StoreError> {
        let sql = rows::fill(
            rows::ENDED_SINCE,
            "fsm_executions",
            &[("{since}", "$2"), ("{m}", "$1::text")],
        );
        let since = ms(self.inner.clock.to_server(since));
        self.rows(&sql, &[&machine, &since])
            .await?
            .iter()
            .map(pg_state_count)
            .collect()
    }

    async fn register(&self, d: StoredDefinition) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO fsm_definitions (machine, fingerprint, definition, registered_at) \
             VALUES ($1, $2, $3, {NOW_MS}) ON CONFLICT (machine, fingerprint) \
             DO UPDATE SET registered_at = excluded.registered_at"
        );
        self.rows(&sql, &[&d.machine, &d.fingerprint, &d.json])
            .await
            .map(drop)
    }

    async fn definitions(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<StoredDefinition>, StoreError> {
        let found = self
            .rows(
                "SELECT machine, fingerprint, definition, registered_at FROM fsm_definitions \
                 WHERE $1::text IS NULL OR machine = $1 ORDER BY registered_at DESC, machine",
                &[&machine],
            )
            .await?;
        found
            .iter()
            .map(|r| {
                Ok(StoredDefinition {
                    machine: r.try_get(0).map_err(db)?,
                    fingerprint: r.try_get(1).map_err(db)?,
                    json: r.try_get(2).map_err(db)?,
                    registered_at: self
                        .inner
                        .clock
                        .to_local(r.try_get::<_, i64>(3).map_err(db)?.max(0) as Millis),
                })
            })
            .collect()
    }

    async fn token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM fsm_tokens WHERE secret_hash = $1");
        Ok(tokens(self.rows(&sql, &[&secret_hash]).await?)?.pop())
    }

    async fn answer_token(&self, answer: TokenAnswer) -> Result<bool, StoreError> {
        self.write(|tx| Write::Answer(answer, tx)).await
    }

    async fn wait_token(
        &self,
        id: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM fsm_tokens \
             WHERE execution = $1 AND step = $2 AND attempt = $3 \
             ORDER BY {DECISIVE_FIRST} LIMIT 1"
        );
        let (step, attempt) = (i64::from(step), i64::from(attempt));
        Ok(tokens(self.rows(&sql, &[&id.to_string(), &step, &attempt]).await?)?.pop())
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.inner.lease)
    }

    async fn renew(
        &self,
        owner: &str,
        executions: &[ExecutionId],
        until: Millis,
    ) -> Result<u64, StoreError> {
        if executions.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = executions.iter().map(ToString::to_string).collect();
        // For as long from the server's now as `until` is from ours.
        let lease = ms(until.saturating_sub(crate::runtime::step::unix_millis()));
        let sql = format!(
            // A row being checkpointed is skipped: its checkpoint extends its lease.
            "UPDATE fsm_executions SET lease_expires = {NOW_MS} + $2 WHERE id IN (SELECT id \
             FROM fsm_executions WHERE lease_owner = $1 AND id = ANY($3) \
             AND lease_expires IS NOT NULL AND status IN ('running', 'waiting') \
             FOR UPDATE SKIP LOCKED) RETURNING 1"
        );
        let rows = self.rows(&sql, &[&owner, &lease, &ids]).await?;
        Ok(rows.len() as u64)
    }

    fn work(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.work.subscribe())
    }

    fn ended(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.ended.subscribe())
    }
}
