//! Layer 3: alerts on executions that fail, stall or wait too long, evaluated by a monitor
//! task on the [`Store`] trait alone (in a worker's process or one of its own), so it works the
//! same on SQLite and PostgreSQL.
//!
//! Each [`Rule`] asks the store one question on its indexes per evaluation. An alert fires once
//! when its condition starts and once when it clears, never in between (no storm), names a few
//! of the executions and how many there are, and goes to every [`Sink`]: a callback, a log
//! line through `tracing`, a webhook.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::json;

use crate::durable::client::Clock;
use crate::durable::store::{ExecutionStatus, ListQuery, Millis, Overdue, Store, StoreError};
use crate::ExecutionId;

/// How many executions an alert names.
const EXAMPLES: usize = 5;

/// A condition the monitor watches, for one machine or all of them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// Of a machine's executions that ended within `window`, more than `above` (a fraction:
    /// `0.05` is 5%) ended failed or errored in one state; only once at least `at_least` ended.
    FailureRate {
        /// The largest fraction that does not alert.
        above: f64,
        /// How far back ended executions count.
        window: Duration,
        /// How many must have ended for the rate to mean something.
        at_least: u64,
    },
    /// An execution running or waiting for longer than this since it started.
    OpenLongerThan(Duration),
    /// A step running, or failing and being retried, for longer than this since its first
    /// attempt began (a step that hangs with no timeout, a retry loop).
    StepLongerThan(Duration),
    /// A wait for a task token older than this.
    WaitLongerThan(Duration),
    /// Executions due for longer than this that no worker has taken up.
    BacklogOlderThan(Duration),
    /// Executions held by a worker whose lease ran out longer ago than this: a worker that
    /// stopped renewing (killed, cut off from the database) and that no other has taken over.
    LeaseExpiredFor(Duration),
}

impl Rule {
    /// The rule's name, as alerts carry it: `"failure rate"`, `"open too long"`,
    /// `"step too long"`, `"wait too long"`, `"backlog"`, `"lease expired"`.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::FailureRate { .. } => "failure rate",
            Rule::OpenLongerThan(_) => "open too long",
            Rule::StepLongerThan(_) => "step too long",
            Rule::WaitLongerThan(_) => "wait too long",
            Rule::BacklogOlderThan(_) => "backlog",
            Rule::LeaseExpiredFor(_) => "lease expired",
        }
    }
}

/// An alert: a condition that started (`firing`) or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The rule's name ([`Rule::name`]), or `"store"` when the store cannot be read.
    pub rule: &'static str,
    /// What the alert is about: the machine (and for a failure rate, the state), as
    /// `"Checkout"` or `"Checkout/Reserved"`; empty for the whole store.
    pub subject: String,
    /// Whether the condition started (else it cleared).
    pub firing: bool,
    /// What is wrong, for a person.
    pub message: String,
    /// A few of the executions it is about, the longest overdue (or most recent failure)
    /// first.
    pub executions: Vec<ExecutionId>,
    /// How many executions it is about.
    pub count: u64,
    /// When it was raised or cleared (Unix milliseconds).
    pub at: Millis,
}

impl Alert {
    /// The alert as JSON, as the webhook posts it.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "rule": self.rule,
            "subject": self.subject,
            "state": if self.firing { "firing" } else { "cleared" },
            "message": self.message,
            "executions": self.executions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "count": self.count,
            "at": self.at,
        })
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.firing { "FIRING" } else { "cleared" };
        write!(f, "[{state}] {}", self.rule)?;
        if !self.subject.is_empty() {
            write!(f, " {}", self.subject)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where alerts go.
#[derive(Clone)]
#[non_exhaustive]
pub enum Sink {
    /// Called with each alert.
    Callback(Arc<dyn Fn(&Alert) + Send + Sync>),
    /// A `tracing` event per alert: `warn` when it fires, `info` when it clears (feature
    /// `tracing`; without it, a line on standard error).
    Log,
    /// An HTTP POST of the alert's JSON ([`Alert::to_json`]) to this `http://` URL (a local
    /// relay, an alert manager). A delivery that fails is tried twice more, then given up
    /// with a log line; it never stops the monitor.
    Webhook(String),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Callback(_) => f.write_str("Callback"),
            Sink::Log => f.write_str("Log"),
            Sink::Webhook(url) => write!(f, "Webhook({url})"),
        }
    }
}

impl Sink {
    /// A sink that calls `f` with each alert.
    pub fn callback(f: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        Sink::Callback(Arc::new(f))
    }
}

/// A condition found true in one evaluation.
struct Finding {
    message: String,
    executions: Vec<ExecutionId>,
    count: u64,
}

/// Evaluates [`Rule`]s against a store and tells [`Sink`]s when alerts fire and clear.
///
/// ```no_run
/// use std::time::Duration;
/// use fsm_core::{Monitor, Rule, Sink, Store};
///
/// async fn watch(store: impl Store) {
///     let monitor = Monitor::new(store)
///         .rule(Rule::WaitLongerThan(Duration::from_secs(3600)))
///         .rule(Rule::FailureRate { above: 0.05, window: Duration::from_secs(300), at_least: 20 })
///         .sink(Sink::Log)
///         .sink(Sink::Webhook("http://127.0.0.1:9093/fsm".into()))
///         .every(Duration::from_secs(10));
///     monitor.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// }
/// # fn main() {}
/// ```
pub struct Monitor<S> {
    store: S,
    machine: Option<String>,
    rules: Vec<Rule>,
    sinks: Vec<Sink>,
    every: Duration,
    clock: Clock,
    /// The alerts firing now, by rule and subject.
    open: BTreeMap<(&'static str, String), Alert>,
    /// The last alerts raised or cleared, newest last.
    recent: VecDeque<Alert>,
    /// Whether each evaluation sets the gauges of where executions stand.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics: bool,
}

impl<S> fmt::Debug for Monitor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("machine", &self.machine)
            .field("rules", &self.rules)
            .field("sinks", &self.sinks)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Monitor<S> {
    /// A monitor of every machine's executions in `store`, with no rules yet, evaluating
    /// every 10 seconds.
    pub fn new(store: S) -> Self {
        Monitor {
            store,
            machine: None,
            rules: Vec::new(),
            sinks: Vec::new(),
            every: Duration::from_secs(10),
            clock: Clock::new(),
            open: BTreeMap::new(),
            recent: VecDeque::new(),
            metrics: false,
        }
    }

    /// Sets, at each evaluation, the gauges of where each machine's executions stand (feature
    /// `metrics`): `fsm_executions_open` (by status: running, waiting), `fsm_backlog` (due and
    /// taken up by no worker) and `fsm_wait_age_seconds` (the oldest wait for a token), from
    /// one count per machine ([`Store::stats`]).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Watches only `machine`'s executions.
    pub fn machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds a sink.
    pub fn sink(mut self, sink: Sink) -> Self {
        self.sinks.push(sink);
        self
    }

    /// How often [`Monitor::run`] evaluates: an alert is raised at most this long after its
    /// condition starts.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// The alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.open.values().cloned().collect()
    }

    /// The last 100 alerts raised or cleared, oldest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.recent.iter().cloned().collect()
    }

    /// Evaluates every rule once, sends the alerts that fired or cleared to the sinks, and
    /// returns them. A store that cannot be read raises a `"store"` alert (cleared once it
    /// reads again); the rules that could be read are applied all the same.
    pub async fn evaluate(&mut self) -> Vec<Alert> {
        let now = self.clock.now();
        let mut found: BTreeMap<(&'static str, String), Finding> = BTreeMap::new();
        let mut failed = None;
        #[cfg(feature = "metrics")]
        if self.metrics {
            if let Err(e) = self.gauges(now).await {
                failed = Some(e);
            }
        }
        for rule in self.rules.clone() {
            match self.check(&rule, now).await {
                Ok(findings) => {
                    for (subject, finding) in findings {
                        found.insert((rule.name(), subject), finding);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = &failed {
            found.insert(
                ("store", String::new()),
                Finding {
                    message: format!("the store cannot be read: {e}"),
                    executions: Vec::new(),
                    count: 0,
                },
            );
        }
        let mut changed = Vec::new();
        // Cleared: open, and not found now (a rule whose question failed keeps its alerts).
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for key in keys {
            if found.contains_key(&key) || (failed.is_some() && key.0 != "store") {
                continue;
            }
            if let Some(mut alert) = self.open.remove(&key) {
                alert.firing = false;
                alert.at = now;
                alert.message = format!("cleared: {}", alert.message);
                changed.push(alert);
            }
        }
        for ((rule, subject), finding) in found {
            let key = (rule, subject.clone());
            match self.open.get_mut(&key) {
                // Still firing: kept up to date, not sent again.
                Some(open) => {
                    open.executions = finding.executions;
                    open.count = finding.count;
                }
                None => {
                    let alert = Alert {
                        rule,
                        subject,
                        firing: true,
                        message: finding.message,
                        executions: finding.executions,
                        count: finding.count,
                        at: now,
                    };
                    self.open.insert(key, alert.clone());
                    changed.push(alert);
                }
            }
        }
        for alert in &changed {
            self.recent.push_back(alert.clone());
            if self.recent.len() > 100 {
                self.recent.pop_front();
            }
            for sink in &self.sinks {
                deliver(sink, alert).await;
            }
        }
        changed
    }

    /// Evaluates every [`Monitor::every`] until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl core::future::Future<Output = ()>) {
        let mut shutdown = core::pin::pin!(shutdown);
        loop {
            self.evaluate().await;
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// Sets the gauges of each machine's executions.
    #[cfg(feature = "metrics")]
    async fn gauges(&self, now: Millis) -> Result<(), StoreError> {
        let all = self.store.stats(self.machine.as_deref(), now, 0).await?;
        let mut machines: Vec<&str> = all.counts.iter().map(|c| c.machine.as_str()).collect();
        machines.dedup();
        for machine in machines {
            let stats = self.store.stats(Some(machine), now, 1).await?;
            crate::metrics::standing(machine, &stats, now);
        }
        Ok(())
    }

    /// The findings of one rule, by subject.
    async fn check(&self, rule: &Rule, now: Millis) -> Result<Vec<(String, Finding)>, StoreError> {
        let before = |d: &Duration| now.saturating_sub(d.as_millis() as Millis);
        let (which, what) = match rule {
            Rule::FailureRate {
                above,
                window,
                at_least,
            } => {
                return self
                    .failure_rate(*above, before(window), *at_least, *window)
                    .await
            }
            Rule::OpenLongerThan(d) => {
                (Overdue::Open(before(d)), format!("open longer than {d:?}"))
            }
            Rule::StepLongerThan(d) => (
                Overdue::Step(before(d)),
                format!("in a step (running or retried) for longer than {d:?}"),
            ),
            Rule::WaitLongerThan(d) => (
                Overdue::Wait(before(d)),
                format!("waiting for a task token for longer than {d:?}"),
            ),
            Rule::BacklogOlderThan(d) => (
                Overdue::Backlog(before(d)),
                format!("due for longer than {d:?} and taken up by no worker"),
            ),
            Rule::LeaseExpiredFor(d) => (
                Overdue::Lease(before(d)),
                format!("held by a worker whose lease ran out more than {d:?} ago"),
            ),
        };
        let found = self
            .store
            .overdue(self.machine.as_deref(), which, 1000)
            .await?;
        // One alert per machine.
        let mut by_machine: BTreeMap<String, Finding> = BTreeMap::new();
        for e in &found.examples {
            let f = by_machine.entry(e.machine.clone()).or_insert(Finding {
                message: String::new(),
                executions: Vec::new(),
                count: 0,
            });
            f.count += 1;
            if f.executions.len() < EXAMPLES {
                f.executions.push(e.id);
            }
        }
        if found.count > found.examples.len() as u64 {
            // Beyond the examples read: counted with the first machine's (the total is
            // exact when one machine is watched).
            if let Some(f) = by_machine.values_mut().next() {
                f.count += found.count - found.examples.len() as u64;
            }
        }
        Ok(by_machine
            .into_iter()
            .map(|(machine, mut f)| {
                f.message = format!("{} execution(s) {what}", f.count);
                (machine, f)
            })
            .collect())
    }

    async fn failure_rate(
        &self,
        above: f64,
        since: Millis,
        at_least: u64,
        window: Duration,
    ) -> Result<Vec<(String, Finding)>, StoreError> {
        let counts = self
            .store
            .ended_since(self.machine.as_deref(), since)
            .await?;
        let mut ended: BTreeMap<&str, u64> = BTreeMap::new();
        for c in &counts {
            *ended.entry(&c.machine).or_default() += c.count;
        }
        let mut failing: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for c in &counts {
            if matches!(c.status, ExecutionStatus::Failed | ExecutionStatus::Errored) {
                *failing.entry((&c.machine, &c.state)).or_default() += c.count;
            }
        }
        let mut out = Vec::new();
        for ((machine, state), failed) in failing {
            let total = ended.get(machine).copied().unwrap_or(0);
            let rate = failed as f64 / total.max(1) as f64;
            if total < at_least || rate <= above {
                continue;
            }
            let mut recent = Vec::new();
            for status in [ExecutionStatus::Errored, ExecutionStatus::Failed] {
                let query = ListQuery::new()
                    .machine(machine)
                    .state(state)
                    .status(status)
                    .newest_first()
                    .limit(EXAMPLES);
                recent.extend(self.store.list(query).await?.executions);
            }
            recent.sort_by_key(|e| core::cmp::Reverse(e.updated_at));
            out.push((
                format!("{machine}/{state}"),
                Finding {
                    message: format!(
                        "{failed} of {total} executions that ended in the last {window:?} \
                         failed in `{state}` ({:.1}%, above {:.1}%)",
                        rate * 100.0,
                        above * 100.0
                    ),
                    executions: recent.iter().take(EXAMPLES).map(|e| e.id).collect(),
                    count: failed,
                },
            ));
        }
        Ok(out)
    }
}

/// Sends `alert` to `sink`.
async fn deliver(sink: &Sink, alert: &Alert) {
    match sink {
        Sink::Callback(f) => f(alert),
        Sink::Log => log(alert),
        Sink::Webhook(url) => {
            let body = alert.to_json().to_string();
            let mut last = None;
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                match post(url, &body).await {
                    Ok(()) => return,
                    Err(e) => last = Some(e),
                }
            }
            let failed = Alert {
                message: format!(
                    "the webhook {url} did not take the alert ({}): {}",
                    last.unwrap_or_default(),
                    alert.message
                ),
                ..alert.clone()
            };
            log(&failed);
        }
    }
}

#[cfg(feature = "tracing")]
fn log(alert: &Alert) {
    let executions: Vec<String> = alert.executions.iter().map(ToString::to_string).collect();
    if alert.firing {
        tracing::warn!(rule = alert.rule, subject = %alert.subject, count = alert.count,
            executions = ?executions, "{alert}");
    } else {
        tracing::info!(rule = alert.rule, subject = %alert.subject, "{alert}");
    }
}

#[cfg(not(feature = "tracing"))]
fn log(alert: &Alert) {
    let executions: Vec<String> = alert.executions.iter().map(ToString::to_string).collect();
    eprintln!("fsm monitor: {alert} [{}]", executions.join(", "));
}

/// POSTs `body` (JSON) to an `http://host[:port]/path` URL; `Err` says why it was not taken
/// (a status other than 2xx, a connection refused, no answer within 5 s).
async fn post(url: &str, body: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains(['@', ' ']) || path.contains([' ', '\r', '\n']) {
        return Err(format!("{url} is not a URL this sink can post to"));
    }
    let address = if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: fsm-monitor\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 64];
        let mut read = 0;
        while read < 12 {
            let n = stream
                .read(&mut head[read..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            read += n;
        }
        let status_line = String::from_utf8_lossy(&head[..read]).into_owned();
        let code = status_line.split(' ').nth(1).unwrap_or("");
        if code.starts_with('2') && code.len() == 3 {
            Ok(())
        } else {
            Err(format!(
                "answered {:?}",
                status_line.lines().next().unwrap_or("nothing")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}
