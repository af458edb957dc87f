//! A web console for durable executions: every execution in a store, its path on the
//! machine's diagram, its history as a table and as a timeline, live.
//!
//! Served by [`serve`] (or mounted with [`router`]) on the tokio runtime the worker already
//! uses: HTML rendered on the server with compile-checked templates (maud), the diagram as SVG
//! laid out in Rust, no JavaScript build step, nothing fetched from elsewhere. Live updates
//! come over Server-Sent Events from **one** query per interval shared by every open page
//! (the executions the open pages show, read by id; the counts by status, read at most a
//! tenth of the time). It reads only unless actions are enabled with a token
//! ([`ConsoleOptions::actions`]), listens on loopback unless told otherwise, and escapes
//! everything it shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fsm_core::store::{ListQuery, Millis, Stats, Store};
use fsm_core::{Cursor, ExecutionId, ExecutionStatus, ExecutionSummary, Operator};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use tokio::sync::watch;

mod actions;
mod pages;
pub mod time;

/// How the console runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleOptions {
    /// How often the shared live query runs (default 1 s).
    pub refresh: Duration,
    /// Rows per page of the executions list (default 50).
    pub page_size: usize,
    /// The token that enables actions (redrive, cancel, answer a wait): a person logs in
    /// with it (compared in constant time) and a name the histories record. `None` (the
    /// default): the console is read-only.
    pub token: Option<String>,
    /// The rules of a monitor the console runs on its store (none by default), whose open
    /// and recent alerts the Alerts page shows.
    pub rules: Vec<fsm_core::Rule>,
    /// How often that monitor evaluates (default 10 s).
    pub monitor_every: Duration,
}

impl ConsoleOptions {
    /// How often the shared live query runs.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Rows per page of the executions list.
    pub fn page_size(mut self, rows: usize) -> Self {
        self.page_size = rows.max(1);
        self
    }

    /// Runs a monitor with `rules` every `every`, for the Alerts page.
    pub fn monitor(mut self, rules: Vec<fsm_core::Rule>, every: Duration) -> Self {
        self.rules = rules;
        self.monitor_every = every;
        self
    }

    /// Enables actions for whoever logs in with `token` (take it from the environment, not
    /// the command line). An empty token enables nothing.
    pub fn actions(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            refresh: Duration::from_secs(1),
            page_size: 50,
            token: None,
            rules: Vec::new(),
            monitor_every: Duration::from_secs(10),
        }
    }
}

/// What every request shares: the store, an operator (for definitions and histories), the
/// live snapshot.
struct App<S> {
    ops: Operator<S>,
    options: ConsoleOptions,
    live: watch::Receiver<Live>,
    watched: Arc<Watched>,
    sessions: actions::Sessions,
    /// The monitor's alerts: firing now, and the last raised or cleared.
    alerts: std::sync::Mutex<(Vec<fsm_core::Alert>, Vec<fsm_core::Alert>)>,
}

/// What the shared live query found last: counts, and the executions that changed.
#[derive(Debug, Clone, Default)]
struct Live {
    /// Counts by status, the backlog, the oldest waits.
    stats: Stats,
    /// The executions some open page shows that were updated since the query before.
    changed: Vec<ExecutionSummary>,
    /// When it ran (0: not yet).
    at: Millis,
}

/// The executions the open pages show, each page's under its own key: the live query reads
/// them all at once, by id, however old they are.
#[derive(Default)]
struct Watched {
    next: std::sync::atomic::AtomicU64,
    pages: std::sync::Mutex<std::collections::HashMap<u64, Vec<ExecutionId>>>,
}

/// The most executions one page may ask to watch, and all pages together.
const WATCH_PER_PAGE: usize = 200;
const WATCH_IN_ALL: usize = 10_000;

impl Watched {
    fn pages(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Vec<ExecutionId>>> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `ids` until the guard is dropped (the page's stream ends).
    fn watch(self: &Arc<Self>, ids: Vec<ExecutionId>) -> WatchGuard {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pages().insert(key, ids);
        WatchGuard {
            watched: self.clone(),
            key,
        }
    }

    /// Every watched execution once, at most [`WATCH_IN_ALL`].
    fn all(&self) -> Vec<ExecutionId> {
        let mut all: Vec<ExecutionId> = self.pages().values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(WATCH_IN_ALL);
        all
    }
}

/// A page's watch: ends when dropped.
struct WatchGuard {
    watched: Arc<Watched>,
    key: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watched.pages().remove(&self.key);
    }
}

/// The console's routes on `store`: `/` (executions), `/executions/{id}`, `/machines`,
/// `/alerts`, `/login` and `/executions/{id}/act` (actions), `/live` (Server-Sent Events,
/// `?ids=` the executions a page shows), `/style.css` and `/console.js`. Starts the shared
/// live query on the current tokio runtime; it ends when the router is dropped.
pub fn router<S: Store + Clone>(store: S, options: ConsoleOptions) -> Router {
    let (tx, rx) = watch::channel(Live::default());
    let watched = Arc::new(Watched::default());
    tokio::spawn(live(store.clone(), options.refresh, watched.clone(), tx));
    let rules = options.rules.clone();
    let every = options.monitor_every;
    let app = Arc::new(App {
        ops: Operator::new(store.clone(), "console"),
        options,
        live: rx,
        watched,
        sessions: actions::Sessions::default(),
        alerts: std::sync::Mutex::new((Vec::new(), Vec::new())),
    });
    if !rules.is_empty() {
        tokio::spawn(watch_alerts(
            rules
                .into_iter()
                .fold(fsm_core::Monitor::new(store), |m, r| m.rule(r)),
            every,
            Arc::downgrade(&app),
        ));
    }
    Router::new()
        .route("/", get(pages::executions::<S>))
        .route("/executions/{id}", get(pages::execution::<S>))
        .route("/machines", get(pages::machines::<S>))
        .route(
            "/login",
            get(actions::login_page::<S>).post(actions::login::<S>),
        )
        .route("/executions/{id}/act", post(actions::act::<S>))
        .route("/alerts", get(pages::alerts::<S>))
        .route("/live", get(live_events::<S>))
        .route("/style.css", get(style))
        .route("/console.js", get(script))
        .with_state(app)
}

/// Serves the console on `listen` until `shutdown` completes. Refuses an address that is not
/// loopback unless `beyond_loopback` says so.
pub async fn serve<S: Store + Clone>(
    store: S,
    listen: SocketAddr,
    beyond_loopback: bool,
    options: ConsoleOptions,
    shutdown: impl core::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if !listen.ip().is_loopback() && !beyond_loopback {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{listen} is not a loopback address: the console listens beyond this machine only when asked"),
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, router(store, options))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Evaluates the console's monitor every `every` while the console lives.
async fn watch_alerts<S: Store>(
    mut monitor: fsm_core::Monitor<S>,
    every: Duration,
    app: std::sync::Weak<App<S>>,
) {
    loop {
        monitor.evaluate().await;
        let Some(app) = app.upgrade() else { return };
        let mut recent = monitor.recent();
        recent.reverse();
        *app.alerts.lock().unwrap_or_else(|e| e.into_inner()) = (monitor.firing(), recent);
        drop(app);
        tokio::time::sleep(every).await;
    }
}

/// The shared live query: every `refresh`, those of the executions the open pages show
/// that were updated since the last look (read by id, however many pages are open and
/// however old the executions), and the counts (by status: [`Store::overview`]), told to
/// every open page at once. On a large store the counts are read less often: at most a
/// tenth of the time goes to counting (1,000,000 executions on SQLite: every 2 s or so).
async fn live<S: Store>(
    store: S,
    refresh: Duration,
    watched: Arc<Watched>,
    tx: watch::Sender<Live>,
) {
    let mut since = time::now();
    let mut stats: Option<Stats> = None;
    let mut counted = std::time::Instant::now();
    let mut counting = Duration::ZERO;
    loop {
        let now = time::now();
        if stats.is_none() || counted.elapsed() >= refresh.max(counting * 10) {
            let began = std::time::Instant::now();
            if let Ok(fresh) = store.overview(None, now, 5).await {
                stats = Some(fresh);
            }
            (counted, counting) = (began, began.elapsed());
        }
        let ids = watched.all();
        let changed = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            store
                .list(ListQuery::new().ids(ids).limit(0))
                .await
                .map(|page| {
                    page.executions
                        .into_iter()
                        .filter(|e| e.updated_at >= since)
                        .collect::<Vec<_>>()
                })
        };
        if let (Some(stats), Ok(changed)) = (&stats, changed) {
            since = now.saturating_sub(refresh.as_millis() as Millis);
            if tx
                .send(Live {
                    stats: stats.clone(),
                    changed,
                    at: now,
                })
                .is_err()
            {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(refresh).await;
    }
}

/// What a page watches: `?ids=` the executions it shows, comma-separated.
#[derive(Debug, Default, Deserialize)]
struct LiveParams {
    ids: Option<String>,
}

/// The live snapshot as a page reads it: counts by status, and the row of each execution it
/// shows that changed, as the list shows it.
async fn live_events<S: Store + Clone>(
    State(app): State<Arc<App<S>>>,
    Query(params): Query<LiveParams>,
) -> Response {
    use tokio_stream::StreamExt as _;
    let mut ids = Vec::new();
    for text in params.ids.as_deref().unwrap_or("").split(',') {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match text.parse::<ExecutionId>() {
            Ok(id) if ids.len() < WATCH_PER_PAGE => ids.push(id),
            Ok(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("a page watches at most {WATCH_PER_PAGE} executions"),
                )
            }
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("{text:?} is not an execution id"),
                )
            }
        }
    }
    let mine: std::collections::HashSet<ExecutionId> = ids.iter().copied().collect();
    let guard = app.watched.watch(ids);
    let stream = tokio_stream::wrappers::WatchStream::new(app.live.clone()).map(move |live| {
        let _watching = &guard;
        let counts: serde_json::Map<String, serde_json::Value> = ExecutionStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), live.stats.with_status(*s).into()))
            .collect();
        let rows: Vec<serde_json::Value> = live
            .changed
            .iter()
            .filter(|e| mine.contains(&e.id))
            .map(|e| {
                serde_json::json!({
                    "id": e.id.to_string(),
                    "status": e.status.as_str(),
                    "state": e.state_name,
                    "attempt": e.attempt,
                    "updated": time::show(e.updated_at),
                    "row": pages::row(e).into_string(),
                })
            })
            .collect();
        let data = serde_json::json!({ "counts": counts, "backlog": live.stats.backlog,
            "changed": rows, "at": live.at });
        Ok::<_, std::convert::Infallible>(Event::default().event("live").data(data.to_string()))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The counts, the backlog and the oldest waits: the live query's if it ran within two of
/// its intervals (a page costs one query, the list, however large the store), else asked.
/// (The counts may be a few seconds old on a large store: the live query updates them.)
async fn stats<S: Store + Clone>(app: &App<S>) -> Result<Stats, fsm_core::store::StoreError> {
    let now = time::now();
    let fresh = {
        let live = app.live.borrow();
        let within = 2 * app.options.refresh.as_millis() as Millis;
        (live.at > 0 && now.saturating_sub(live.at) <= within).then(|| live.stats.clone())
    };
    match fresh {
        Some(stats) => Ok(stats),
        None => app.ops.store().overview(None, now, 5).await,
    }
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
        .into_response()
}

/// A page: the layout around `body`.
fn page(title: &str, body: Markup) -> Html<String> {
    page_about(title, body, None)
}

/// A page about one execution (live updates reload it when that execution changes).
fn page_about(title: &str, body: Markup, execution: Option<ExecutionId>) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fsm console" }
                link rel="stylesheet" href="/style.css";
                script src="/console.js" defer {}
            }
            body data-execution=[execution] {
                header.top {
                    a.brand href="/" { "fsm console" }
                    nav {
                        a href="/" { "Executions" }
                        a href="/machines" { "Machines" }
                        a href="/alerts" { "Alerts" }
                    }
                    span.live #live-status title="Live updates" { "live" }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A page that says what went wrong, with a status.
fn problem(status: StatusCode, message: &str) -> Response {
    let body = html! { h1 { "Not shown" } p.error { (message) } };
    (status, page("Not shown", body)).into_response()
}

/// The query string of the executions list.
#[derive(Debug, Default, Deserialize)]
struct ListParams {
    machine: Option<String>,
    status: Option<String>,
    state: Option<String>,
    name: Option<String>,
    /// Text the state's JSON holds.
    data: Option<String>,
    /// Started at or after (UTC, as [`time::parse`] reads it).
    from: Option<String>,
    /// Started before.
    to: Option<String>,
    after: Option<String>,
    newest: Option<String>,
}

impl ListParams {
    /// The filters given (not blank), by name, as the form and the links carry them.
    fn filters(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("machine", &self.machine),
            ("status", &self.status),
            ("state", &self.state),
            ("name", &self.name),
            ("data", &self.data),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_deref().filter(|v| !v.trim().is_empty())?)))
    }

    /// The link to the page after `cursor`, with the same filters.
    fn link_after(&self, cursor: Cursor) -> String {
        let mut link = format!("/?after={cursor}");
        for (key, value) in self.filters() {
            link.push_str(&format!("&{key}={}", encode(value)));
        }
        link
    }

    fn query(&self, limit: usize) -> Result<ListQuery, String> {
        let mut q = ListQuery::new().limit(limit);
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        q.machine = given(&self.machine);
        q.state = given(&self.state);
        q.name_prefix = given(&self.name);
        q.data_contains = given(&self.data);
        if let Some(status) = given(&self.status) {
            q.status = Some(
                ExecutionStatus::parse(&status).ok_or_else(|| format!("no status {status:?}"))?,
            );
        }
        let when = |v: &Option<String>| {
            given(v)
                .map(|t| {
                    time::parse(&t).ok_or_else(|| {
                        format!("{t:?} is not a time: write 2026-12-02 or 2026-12-02 16:09 (UTC)")
                    })
                })
                .transpose()
        };
        q.started_after = when(&self.from)?;
        q.started_before = when(&self.to)?;
        if let Some(after) = given(&self.after) {
            q.after = Some(
                after
                    .parse::<Cursor>()
                    .map_err(|_| format!("{after:?} is not a page cursor"))?,
            );
        }
        q.newest_first = self.newest.as_deref() != Some("0");
        Ok(q)
    }
}

/// What the pages share: the params and the state.
type AppState<S> = State<Arc<App<S>>>;
type ListQueryParams = Query<ListParams>;
type IdPath = Path<String>;

/// `text` for a URL's query.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Raw markup: SVG the views layer made (its names escaped there).
fn raw(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}
