//! The console's pages, rendered on the server.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fsm_core::store::Store;
use fsm_core::views::Diagram;
use fsm_core::{EventKind, ExecutionStatus, ExecutionSummary, History};
use maud::{html, Markup};

use crate::{encode, page, page_about, problem, raw, time, AppState, IdPath, ListQueryParams};

/// One execution as a row of the list (also sent live, to replace the row in place).
pub(crate) fn row(e: &ExecutionSummary) -> Markup {
    html! {
        tr data-id=(e.id) {
            td.id { a href={ "/executions/" (e.id) } { (e.id) } }
            td { (e.name.as_deref().unwrap_or("")) }
            td { (e.machine) }
            td.state { (e.state_name) }
            td { span class={ "status " (e.status.as_str()) } { (e.status.as_str()) } }
            td.time { (time::show(e.created_at)) }
            td.time.updated { (time::show(e.updated_at)) }
            td.num.attempt { (e.attempt) }
        }
    }
}

/// The counts by status, each a link to the list filtered by it.
fn counts(stats: &fsm_core::store::Stats) -> Markup {
    html! {
        ul.counts {
            @for s in ExecutionStatus::ALL {
                li {
                    a href={ "/?status=" (s.as_str()) } {
                        span class={ "status " (s.as_str()) } { (s.as_str()) }
                        " "
                        b data-count=(s.as_str()) { (stats.with_status(s)) }
                    }
                }
            }
        }
    }
}

/// `/`: the executions, filtered and paged, with the counts, the backlog and the oldest waits.
pub(crate) async fn executions<S: Store + Clone>(
    State(app): AppState<S>,
    Query(params): ListQueryParams,
) -> Response {
    let query = match params.query(app.options.page_size) {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let store = app.ops.store();
    let (page_of, stats) = match tokio::join!(store.list(query.clone()), crate::stats(&app)) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => {
            return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    };
    let now = time::now();
    let machines: Vec<String> = {
        let mut m: Vec<String> = stats.counts.iter().map(|c| c.machine.clone()).collect();
        m.dedup();
        m
    };
    let selected = |v: &Option<String>, option: &str| v.as_deref() == Some(option);
    let next = page_of.next.map(|c| params.link_after(c));
    let body = html! {
        h1 { "Executions" }
        section.summary {
            (counts(&stats))
            p.backlog {
                @match stats.backlog_since {
                    Some(since) => {
                        "Backlog: " b data-backlog { (stats.backlog) }
                        " due and not taken up, the oldest for " (time::age(now.saturating_sub(since)))
                    }
                    None => { "Backlog: " b data-backlog { "0" } }
                }
                @if stats.expired_leases > 0 {
                    " · " b.warn { (stats.expired_leases) } " held by a worker whose lease ran out"
                }
            }
            @if !stats.oldest_waits.is_empty() {
                details.waits {
                    summary { "Oldest waits" }
                    ul {
                        @for w in &stats.oldest_waits {
                            li {
                                a href={ "/executions/" (w.id) } { (w.id) }
                                " " (w.machine) " in " (w.state_name) ", waiting for "
                                (time::age(now.saturating_sub(w.entered_at)))
                            }
                        }
                    }
                }
            }
        }
        form.filters method="get" action="/" {
            label { "Machine "
                select name="machine" {
                    option value="" { "any" }
                    @for m in &machines {
                        option value=(m) selected[selected(&params.machine, m)] { (m) }
                    }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in ExecutionStatus::ALL {
                        option value=(s.as_str()) selected[selected(&params.status, s.as_str())] { (s.as_str()) }
                    }
                }
            }
            label { "State " input name="state" value=(params.state.as_deref().unwrap_or("")) size="14"; }
            label { "Name begins " input name="name" value=(params.name.as_deref().unwrap_or("")) size="14"; }
            label { "Data holds " input name="data" value=(params.data.as_deref().unwrap_or("")) size="16" placeholder="text in the state's JSON"; }
            label { "Started from " input name="from" value=(params.from.as_deref().unwrap_or("")) size="16" placeholder="2026-12-02 16:00"; }
            label { "to " input name="to" value=(params.to.as_deref().unwrap_or("")) size="16" placeholder="UTC"; }
            button type="submit" { "Filter" }
            a href="/" { "clear" }
        }
        table.executions #executions {
            thead { tr {
                th { "Id" } th { "Name" } th { "Machine" } th { "State" } th { "Status" }
                th { "Started" } th { "Updated" } th { "Attempt" }
            } }
            tbody {
                @for e in &page_of.executions { (row(e)) }
            }
        }
        @if page_of.executions.is_empty() { p.empty { "No executions match." } }
        @if let Some(next) = next { p.pager { a href=(next) { "Next page →" } } }
    };
    page("Executions", body).into_response()
}

/// What the timeline draws: one bar per attempt or wait, from and to (microseconds since
/// the start), with its outcome.
struct Bar {
    state: &'static str,
    label: String,
    from: f64,
    to: f64,
    class: &'static str,
}

fn bars(history: &History) -> Vec<Bar> {
    let mut bars: Vec<Bar> = Vec::new();
    let micros = |d: core::time::Duration| d.as_secs_f64() * 1e6;
    for e in history.events() {
        let at = micros(e.at);
        match &e.kind {
            EventKind::StepStarted { state, attempt } => bars.push(Bar {
                state,
                label: format!("{state} attempt {attempt}"),
                from: at,
                to: at,
                class: "running",
            }),
            EventKind::StepSucceeded { state, .. }
            | EventKind::StepFailed { state, .. }
            | EventKind::StepTimedOut { state, .. } => {
                if let Some(b) = bars.iter_mut().rev().find(|b| b.state == *state) {
                    b.to = at;
                    b.class = match e.kind {
                        EventKind::StepSucceeded { .. } => "succeeded",
                        _ => "failed",
                    };
                }
            }
            EventKind::WaitStarted { state, .. } => bars.push(Bar {
                state,
                label: format!("{state} waits"),
                from: at,
                to: at,
                class: "waiting",
            }),
            EventKind::WaitCompleted { state, .. } | EventKind::WaitFailed { state, .. } => {
                if let Some(b) = bars
                    .iter_mut()
                    .rev()
                    .find(|b| b.state == *state && b.class == "waiting")
                {
                    b.to = at;
                    b.class = "waited";
                }
            }
            _ => {}
        }
    }
    bars
}

/// The timeline as SVG: each attempt a bar on its state's line, gaps where the execution
/// waited or was stopped.
fn timeline(history: &History, end: f64) -> Markup {
    let bars = bars(history);
    let mut lines: Vec<&'static str> = Vec::new();
    for b in &bars {
        if !lines.contains(&b.state) {
            lines.push(b.state);
        }
    }
    let span = bars
        .iter()
        .map(|b| b.to.max(b.from))
        .fold(end, f64::max)
        .max(1.0);
    let (left, width, line) = (150.0, 760.0, 24.0);
    let height = line * lines.len() as f64 + 24.0;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(left + width + 20.0) height=(height)
            viewBox={ "0 0 " (left + width + 20.0) " " (height) } {
            @for (i, state) in lines.iter().enumerate() {
                text.lane x="4" y=(line * i as f64 + 16.0) { (state) }
            }
            @for b in &bars {
                @let y = line * lines.iter().position(|s| *s == b.state).unwrap_or(0) as f64 + 4.0;
                @let x = left + b.from / span * width;
                @let w = ((b.to - b.from) / span * width).max(2.0);
                rect class={ "bar " (b.class) } x=(format!("{x:.1}")) y=(y) width=(format!("{w:.1}")) height="16" {
                    title { (b.label) ", " (format!("{:.3}", (b.to - b.from) / 1000.0)) " ms" }
                }
            }
            text.axis x=(left) y=(height - 4.0) { "0" }
            text.axis x=(left + width) y=(height - 4.0) text-anchor="end" { (format!("{:.3} s", span / 1e6)) }
        }
    }
}

/// `/executions/{id}`: where it stands, its path on the diagram, its history as a table and
/// as a timeline, its data, its error.
pub(crate) async fn execution<S: Store + Clone>(
    State(app): AppState<S>,
    Path(id): IdPath,
    headers: axum::http::HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<fsm_core::ExecutionId>() else {
        return problem(StatusCode::BAD_REQUEST, "that is not an execution id");
    };
    let row = match app.ops.store().get(id).await {
        Ok(Some(row)) => row,
        Ok(None) => return problem(StatusCode::NOT_FOUND, &format!("no execution {id}")),
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let history = app.ops.history(&row).await;
    // The wait's token as the store knows it: its address and status, and the hash of its
    // secret (the secret itself is only with whoever the step handed it to).
    let token = if row.waiting_for == Some(fsm_core::WaitingFor::Token) {
        app.ops
            .store()
            .wait_token(row.id, row.step, row.attempt)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let diagram = match (app.ops.definition_of(&row).await, &history) {
        (Ok(def), Ok(history)) => Some(Diagram::new(def).with_path(history).svg()),
        (Ok(def), Err(_)) => Some(Diagram::new(def).svg()),
        (Err(_), _) => None,
    };
    let data = serde_json::from_str::<serde_json::Value>(&row.state)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| row.state.clone());
    let end = time::now().saturating_sub(row.created_at) as f64 * 1000.0;
    let end = if row.status.is_final() {
        row.updated_at.saturating_sub(row.created_at) as f64 * 1000.0
    } else {
        end
    };
    let body = html! {
        h1 { "Execution " code { (row.id) } }
        dl.facts {
            @if let Some(name) = &row.name { dt { "Name" } dd { (name) } }
            dt { "Machine" } dd { a href="/machines" { (row.machine) } " " small { (row.fingerprint) } }
            dt { "Status" } dd { span class={ "status " (row.status.as_str()) } data-status { (row.status.as_str()) }
                @if let Some(w) = row.waiting_for { span.waiting-for { " (for " (w.as_str()) ")" } } }
            dt { "State" } dd data-state { (row.state_name) }
            dt { "Step" } dd { (row.step) ", attempt " (row.attempt) }
            dt { "Started" } dd { (time::show(row.created_at)) }
            dt { "Updated" } dd { (time::show(row.updated_at)) }
            @if let Some(due) = row.due_at { dt { "Due" } dd { (time::show(due)) } }
            @if let Some(owner) = &row.lease_owner { dt { "Held by" } dd { "worker " (owner) } }
            @if let Some(t) = &token {
                dt { "Task token" }
                dd.token {
                    code { "ft1." (t.execution) "." (t.step) "." (t.attempt) ".…" }
                    " " span class={ "token " (t.status.as_str()) } data-token-status { (t.status.as_str()) }
                    " · secret's SHA-256 " code title=(t.secret_hash) { (t.secret_hash.get(..12).unwrap_or("")) "…" }
                }
            }
        }
        @if let Some(error) = &row.error { p.error { b { "Error: " } (error) } }
        @if app.options.token.is_some() {
            @match app.sessions.of(&headers) {
                Some(session) => { (crate::actions::forms(&row, &session)) }
                None => { p.note { a href="/login" { "Log in" } " to act on this execution." } }
            }
        }
        h2 { "Path" }
        @match diagram {
            Some(svg) => div.diagram { (raw(svg)) },
            None => p.note { "No definition of this machine is registered in the store: a worker registers its own when it starts." },
        }
        h2 { "Data" }
        pre.data { (data) }
        @match &history {
            Ok(history) => {
                h2 { "Timeline" }
                div.timeline-wrap { (timeline(history, end)) }
                h2 { "History" }
                table.history {
                    thead { tr { th { "At" } th { "Event" } th { "State" } th { "Detail" } } }
                    tbody {
                        @for e in history.events() {
                            tr {
                                td.time { (format!("{:.3} ms", e.at.as_secs_f64() * 1000.0)) }
                                td { (e.kind.name()) }
                                td { (e.kind.state()) }
                                td { (e.kind.to_string()) }
                            }
                        }
                    }
                }
            }
            Err(e) => { p.error { "The history cannot be read: " (e.to_string()) } }
        }
    };
    page_about(&format!("Execution {id}"), body, Some(id)).into_response()
}

/// `/machines`: each registered definition with its diagram, counts per state and failure
/// rate per state over the last day.
pub(crate) async fn machines<S: Store + Clone>(State(app): AppState<S>) -> Response {
    let store = app.ops.store();
    let now = time::now();
    let day = now.saturating_sub(86_400_000);
    let (definitions, stats, ended) = match tokio::join!(
        store.definitions(None),
        store.stats(None, now, 0),
        store.ended_since(None, day)
    ) {
        (Ok(d), Ok(s), Ok(e)) => (d, s, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    };
    // The latest registration of each machine (they come newest first).
    let mut latest: Vec<&fsm_core::store::StoredDefinition> = Vec::new();
    for d in &definitions {
        if !latest.iter().any(|l| l.machine == d.machine) {
            latest.push(d);
        }
    }
    let body = html! {
        h1 { "Machines" }
        @if definitions.is_empty() { p.empty { "No machine is registered: a worker registers its own when it starts." } }
        @for d in latest {
                @let def = fsm_core::Definition::from_json(&d.json);
                section.machine data-machine=(d.machine) {
                    h2 { (d.machine) " " small { (d.fingerprint) } }
                    @match def {
                        Ok(def) => {
                            div.diagram { (raw(Diagram::new(def).svg())) }
                            table.states {
                                thead { tr { th { "State" }
                                    @for s in ExecutionStatus::ALL { th { (s.as_str()) } }
                                    th { "Failure rate (24 h)" } } }
                                tbody {
                                    @for s in def.states {
                                        @let count = |status: ExecutionStatus| stats.counts.iter()
                                            .filter(|c| c.machine == d.machine && c.state == s.name && c.status == status)
                                            .map(|c| c.count).sum::<u64>();
                                        @let ended_total: u64 = ended.iter().filter(|c| c.machine == d.machine).map(|c| c.count).sum();
                                        @let failed: u64 = ended.iter().filter(|c| c.machine == d.machine && c.state == s.name
                                            && matches!(c.status, ExecutionStatus::Failed | ExecutionStatus::Errored)).map(|c| c.count).sum();
                                        tr {
                                            td { a href={ "/?machine=" (encode(&d.machine)) "&state=" (encode(s.name)) } { (s.name) } }
                                            @for status in ExecutionStatus::ALL { td.num { (count(status)) } }
                                            td.num { @if ended_total > 0 { (format!("{:.1}%", failed as f64 * 100.0 / ended_total as f64)) } @else { "–" } }
                                        }
                                    }
                                }
                            }
                        }
                        Err(e) => { p.error { "Its definition cannot be read: " (e) } }
                    }
                }
        }
    };
    page("Machines", body).into_response()
}

/// One alert as the Alerts page lists it.
fn alert_row(a: &fsm_core::Alert) -> Markup {
    html! {
        tr class={ "alert " (if a.firing { "firing" } else { "cleared" }) } {
            td.time { (time::show(a.at)) }
            td { (if a.firing { "firing" } else { "cleared" }) }
            td { (a.rule) }
            td { (a.subject) }
            td { (a.message) }
            td {
                @for id in &a.executions { a href={ "/executions/" (id) } { (id) } " " }
                @if a.count > a.executions.len() as u64 { "(" (a.count) " in all)" }
            }
        }
    }
}

/// `/alerts`: the console's monitor, its alerts firing now and the last raised or cleared.
pub(crate) async fn alerts<S: Store + Clone>(State(app): AppState<S>) -> Response {
    let (firing, recent) = app.alerts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let header = html! {
        tr { th { "At" } th { "" } th { "Rule" } th { "About" } th { "What" } th { "Executions" } }
    };
    let body = html! {
        h1 { "Alerts" }
        @if app.options.rules.is_empty() {
            p.note { "This console runs no monitor (fsm console --monitor, or ConsoleOptions::monitor)." }
        } @else {
            p.note { (app.options.rules.len()) " rules, evaluated every "
                (format!("{:?}", app.options.monitor_every)) "." }
            h2 { "Firing" }
            @if firing.is_empty() { p.empty { "Nothing is firing." } } @else {
                table.alerts #firing { thead { (header) } tbody { @for a in &firing { (alert_row(a)) } } }
            }
            h2 { "Recent" }
            @if recent.is_empty() { p.empty { "No alert yet." } } @else {
                table.alerts #recent { thead { (header) } tbody { @for a in &recent { (alert_row(a)) } } }
            }
        }
    };
    page("Alerts", body).into_response()
}
