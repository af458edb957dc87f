//! Actions from the console, when it is started with them: a person logs in with the token the
//! console was given (compared in constant time) and a name the histories record; each form
//! carries the session's CSRF value; each action is confirmed on a page of its own before it
//! is applied, through the same `Operator` the command line uses.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use fsm_core::store::Store;
use fsm_core::{ExecutionId, ExecutionRecord, ExecutionStatus, Operator, StepError, WaitingFor};
use maud::{html, Markup};
use serde::Deserialize;

use crate::{page, problem, AppState};

/// The cookie that holds a session.
const COOKIE: &str = "fsm_console";

/// A person logged in.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who acts, as histories record it (`console:<name>`).
    pub(crate) who: String,
    /// The value every form of the session carries.
    pub(crate) csrf: String,
}

/// The sessions of a console with actions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 128 random bits from the operating system, as hex.
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sessions {
    /// The session of the request's cookie, if it has a live one.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let id = cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)?
            .1;
        let sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .iter()
            .find(|(key, _)| same(key.as_bytes(), id.as_bytes()))
            .map(|(_, s)| s.clone())
    }

    fn open(&self, who: String) -> Result<(String, Session), String> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let session = Session { who, csrf };
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= 10_000 {
            sessions.clear();
        }
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    token: String,
    name: String,
}

/// `GET /login`.
pub(crate) async fn login_page<S: Store + Clone>(State(app): AppState<S>) -> Response {
    if app.options.token.is_none() {
        return problem(StatusCode::NOT_FOUND, "this console is read-only");
    }
    page("Log in", login_form(None)).into_response()
}

fn login_form(error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in to act" }
        @if let Some(error) = error { p.error { (error) } }
        form.login method="post" action="/login" {
            label { "Your name (the histories record it) " input name="name" required maxlength="64"; }
            label { "Token " input name="token" type="password" required; }
            button type="submit" { "Log in" }
        }
    }
}

/// `POST /login`: the token compared in constant time; a session cookie on success.
pub(crate) async fn login<S: Store + Clone>(
    State(app): AppState<S>,
    Form(form): Form<Login>,
) -> Response {
    let Some(token) = &app.options.token else {
        return problem(StatusCode::NOT_FOUND, "this console is read-only");
    };
    let name: String = form
        .name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if !same(form.token.as_bytes(), token.as_bytes()) || name.is_empty() {
        let body = login_form(Some(
            "That token is not this console's (or no name was given).",
        ));
        return (StatusCode::UNAUTHORIZED, page("Log in", body)).into_response();
    }
    match app.sessions.open(format!("console:{name}")) {
        Ok((id, _)) => (
            [(
                header::SET_COOKIE,
                format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// An action's form fields.
#[derive(Debug, Deserialize)]
pub(crate) struct Act {
    action: String,
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The actions an execution's page offers, as forms, for a session.
pub(crate) fn forms(row: &ExecutionRecord, session: &Session) -> Markup {
    let id = row.id;
    let action = format!("/executions/{id}/act");
    let can_redrive = matches!(
        row.status,
        ExecutionStatus::Errored | ExecutionStatus::Cancelled
    );
    let waits = row.waiting_for == Some(WaitingFor::Token) && !row.status.is_final();
    html! {
        section.actions {
            h2 { "Act " small { "as " (session.who) } }
            div.buttons {
                @if can_redrive {
                    form method="post" action=(action) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="action" value="redrive";
                        button #redrive type="submit" { "Redrive" }
                    }
                }
                @if !row.status.is_final() {
                    form method="post" action=(action) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="action" value="cancel";
                        button #cancel type="submit" { "Cancel" }
                    }
                }
            }
            @if waits {
                form.complete method="post" action=(action) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="action" value="complete";
                    label { "Complete the wait with the next state (JSON) "
                        textarea #next name="next" rows="4" cols="60" required {} }
                    button #complete type="submit" { "Complete" }
                }
                form.fail method="post" action=(action) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="action" value="fail";
                    label { "Fail the wait: kind " input name="kind" required size="16"; }
                    label { " message " input name="message" size="32"; }
                    button #fail type="submit" { "Fail" }
                }
            }
        }
    }
}

/// `POST /executions/{id}/act`: checks the session and its CSRF value, asks to confirm, then
/// applies the action and goes back to the execution.
pub(crate) async fn act<S: Store + Clone>(
    State(app): AppState<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Act>,
) -> Response {
    if app.options.token.is_none() {
        return problem(StatusCode::NOT_FOUND, "this console is read-only");
    }
    let Some(session) = app.sessions.of(&headers) else {
        return problem(StatusCode::UNAUTHORIZED, "log in to act (/login)");
    };
    if !same(form.csrf.as_bytes(), session.csrf.as_bytes()) {
        return problem(StatusCode::FORBIDDEN, "this form is not from this session");
    }
    let Ok(id) = id.parse::<ExecutionId>() else {
        return problem(StatusCode::BAD_REQUEST, "that is not an execution id");
    };
    let what = match form.action.as_str() {
        "redrive" | "cancel" | "complete" | "fail" => form.action.as_str(),
        _ => return problem(StatusCode::BAD_REQUEST, "no such action"),
    };
    if form.confirm.as_deref() != Some("yes") {
        let body = html! {
            h1 { "Confirm" }
            p.confirm { "Really " b { (what) } " execution " code { (id) } "?" }
            @if let Some(next) = &form.next { pre.data { (next) } }
            @if let Some(kind) = &form.kind { p { "Error " code { (kind) } ": " (form.message.as_deref().unwrap_or("")) } }
            form method="post" action={ "/executions/" (id) "/act" } {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="action" value=(what);
                input type="hidden" name="confirm" value="yes";
                @if let Some(next) = &form.next { input type="hidden" name="next" value=(next); }
                @if let Some(kind) = &form.kind { input type="hidden" name="kind" value=(kind); }
                @if let Some(m) = &form.message { input type="hidden" name="message" value=(m); }
                button #confirm type="submit" { "Yes, " (what) }
                " " a href={ "/executions/" (id) } { "No, go back" }
            }
        };
        return page("Confirm", body).into_response();
    }
    let ops = Operator::new(app.ops.store().clone(), session.who.clone());
    let done = match what {
        "redrive" => ops.redrive(id).await,
        "cancel" => ops.cancel(id).await,
        "complete" => match serde_json::from_str(form.next.as_deref().unwrap_or("")) {
            Ok(next) => ops.complete(id, &next).await,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("the next state is not JSON: {e}"),
                )
            }
        },
        _ => {
            let kind = form.kind.clone().unwrap_or_default();
            if kind.trim().is_empty() {
                return problem(StatusCode::BAD_REQUEST, "an error needs a kind");
            }
            let message = form.message.clone().unwrap_or_default();
            ops.fail(id, StepError::fatal(kind, message)).await
        }
    };
    match done {
        Ok(()) => Redirect::to(&format!("/executions/{id}")).into_response(),
        Err(e) => problem(StatusCode::CONFLICT, &e.to_string()),
    }
}
