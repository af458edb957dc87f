//! The console's pages, served by its router on a real SQLite file that a worker runs, read
//! as a browser would get them: what they show, what they escape, the live stream.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fsm_console::{router, ConsoleOptions};
use fsm_core::{Context, ExecutionStatus, Executor, Fsm, SqliteStore, StepError, TaskToken};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Note {
    #[fsm(initial, on(post => Posted | Rejected))]
    Draft { text: String },
    #[fsm(wait, on(read => Read))]
    Posted { text: String },
    #[fsm(terminal)]
    Read { text: String },
    #[fsm(terminal(failure))]
    Rejected { text: String },
}

struct Board;

impl note::Steps for Board {
    async fn draft(
        &self,
        n: note::Machine<note::Draft>,
        _: Context,
    ) -> Result<note::DraftNext, StepError> {
        if n.text.is_empty() {
            return Ok(n.post(|d| note::Rejected { text: d.text }).into());
        }
        Ok(n.post(|d| note::Posted { text: d.text }).into())
    }

    async fn posted(
        &self,
        _: note::Machine<note::Posted>,
        _: Context,
        _: TaskToken,
    ) -> Result<(), StepError> {
        Ok(())
    }
}

/// The path of a database in a fresh directory for one test.
fn fresh(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fsm-console-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("notes.db")
}

/// A worker on `path`.
fn board(path: &std::path::Path) -> fsm_core::DurableExecutor<Note, Board, SqliteStore> {
    Executor::<Note, Board>::builder(Board)
        .durable(SqliteStore::open(path).unwrap())
        .unwrap()
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_executions_their_paths_and_histories_escaped_and_live() {
    let path = fresh("pages");
    let worker = board(&path);
    let hostile = "<script>alert('owned')</script>";
    let posted = worker
        .start(note::Machine::new(note::Draft {
            text: hostile.into(),
        }))
        .await
        .unwrap();
    let rejected = worker
        .start(note::Machine::new(note::Draft {
            text: String::new(),
        }))
        .await
        .unwrap();
    worker.finished(rejected).await.unwrap();
    while worker.get(posted).await.unwrap().status != ExecutionStatus::Waiting {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read_only = fsm_core::SqliteOptions {
        read_only: true,
        ..Default::default()
    };
    let store = SqliteStore::open_with(&path, read_only).unwrap();
    let app = router(
        store.clone(),
        ConsoleOptions::default().refresh(Duration::from_millis(100)),
    );

    // The list: both executions, the counts, filters.
    let (status, list) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    for id in [posted, rejected] {
        assert!(list.contains(&format!("<tr data-id=\"{id}\">")), "{list}");
    }
    assert!(list.contains("<b data-count=\"waiting\">1</b>"), "{list}");
    assert!(list.contains("<b data-count=\"failed\">1</b>"), "{list}");
    let (_, failed) = get(&app, "/?status=failed").await;
    assert!(
        failed.contains(&rejected.to_string())
            && !failed.contains(&format!("data-id=\"{posted}\""))
    );
    let (status, bad) = get(&app, "/?status=%3Cb%3Eodd").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("no status &quot;&lt;b&gt;odd&quot;"), "{bad}");

    // A search in the state's data, a time range, and paging that keeps the filters.
    let (_, found) = get(&app, "/?data=alert").await;
    assert!(found.contains(&format!("data-id=\"{posted}\"")), "{found}");
    assert!(
        !found.contains(&format!("data-id=\"{rejected}\"")),
        "{found}"
    );
    assert!(found.contains("name=\"data\" value=\"alert\""), "{found}");
    let (_, long_ago) = get(&app, "/?from=2001-01-01&to=2001-01-02%2012:00").await;
    assert!(long_ago.contains("No executions match."), "{long_ago}");
    let (status, bad) = get(&app, "/?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("&quot;yesterday&quot; is not a time"), "{bad}");
    let paged = router(store.clone(), ConsoleOptions::default().page_size(1));
    let (_, first) = get(&paged, "/?data=%22text%22&from=2001-01-01").await;
    let next = first
        .split("<p class=\"pager\"><a href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no next page: {first}"))
        .replace("&amp;", "&");
    assert!(next.contains("&data=%22text%22&from=2001-01-01"), "{next}");
    let (_, second) = get(&paged, &next).await;
    let shown =
        |page: &str| [posted, rejected].map(|id| page.contains(&format!("data-id=\"{id}\"")));
    let (first, second) = (shown(&first), shown(&second));
    assert!(first != second && first[0] != first[1] && second[0] != second[1]);

    // An execution: its path on the diagram, its data escaped, its history.
    let (status, page) = get(&app, &format!("/executions/{posted}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(hostile), "the data is shown as text");
    assert!(
        page.contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;")
            || page.contains("&lt;script&gt;alert('owned')&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("<g class=\"state visited current\" data-state=\"Posted\">"),
        "{page}"
    );
    assert!(
        page.contains("<g class=\"edge taken\" data-from=\"Draft\" data-to=\"Posted\""),
        "{page}"
    );
    assert!(page.contains("<td>wait started</td>"), "{page}");
    // Its wait's token, as the store knows it: open, its secret's hash, never the secret.
    assert!(
        page.contains(&format!("<code>ft1.{posted}.1.1.…</code>"))
            && page.contains("data-token-status>open</span>"),
        "{page}"
    );
    assert!(page.contains("<svg class=\"timeline\""), "{page}");
    let (status, _) = get(&app, "/executions/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = fsm_core::ExecutionId::from_u128(9);
    let (status, _) = get(&app, &format!("/executions/{missing}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Machines: the registered definition, counts per state.
    let (_, machines) = get(&app, "/machines").await;
    assert!(machines.contains("data-machine=\"Note\""), "{machines}");
    assert!(machines.contains("class=\"fsm-diagram\""));

    // Live: one stream per page, fed by the shared query, with the rows of the executions
    // that page shows.
    let stream = |ids: String| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(
                    Request::get(format!("/live?ids={ids}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(
                response.headers()["content-type"].to_str().unwrap(),
                "text/event-stream"
            );
            response.into_body()
        }
    };
    let mut watching = stream(posted.to_string()).await;
    let mut elsewhere = stream(rejected.to_string()).await;
    let json = next_live(&mut watching).await;
    assert_eq!(json["counts"]["waiting"], 1);
    // The waiting note is read (answered by hand through another process's handle): the
    // page that shows it is told, with its new row; the other page is not.
    fsm_core::Operator::new(SqliteStore::open_client(&path).unwrap(), "test")
        .complete(posted, &serde_json::json!({ "Read": { "text": "read" } }))
        .await
        .unwrap();
    let changed = loop {
        let json = next_live(&mut watching).await;
        if let Some(row) = json["changed"].as_array().and_then(|c| c.first()).cloned() {
            break row;
        }
    };
    assert_eq!(changed["id"], posted.to_string());
    assert_eq!(changed["status"], "succeeded");
    assert!(changed["row"]
        .as_str()
        .unwrap()
        .contains("status succeeded"));
    for _ in 0..3 {
        let json = next_live(&mut elsewhere).await;
        let ids: Vec<&str> = json["changed"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        assert!(ids.iter().all(|id| *id == rejected.to_string()), "{json}");
    }
    let (status, _) = get(&app, "/live?ids=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    drop(store);
    worker.shutdown().await;
}

#[tokio::test]
async fn it_listens_beyond_loopback_only_when_asked() {
    let store = SqliteStore::open(fresh("loopback")).unwrap();
    let err = fsm_console::serve(
        store,
        "0.0.0.0:0".parse().unwrap(),
        false,
        ConsoleOptions::default(),
        async {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("not a loopback address"));
}

/// The next live update on a page's stream, as JSON.
async fn next_live(body: &mut Body) -> serde_json::Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a live update within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: live\ndata: "), "{text}");
    serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap()
}

/// `text` as a form field's value.
fn field(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn post(
    app: &axum::Router,
    uri: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", field(v)))
        .collect();
    let mut request =
        Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.join("&"))).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_as(app: &axum::Router, uri: &str, cookie: &str) -> String {
    let response = app
        .clone()
        .oneshot(
            Request::get(uri)
                .header("cookie", cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_a_session_and_its_csrf_value_and_are_confirmed_and_recorded() {
    let path = fresh("act");
    let worker = board(&path);
    let mut ids = Vec::new();
    for text in ["one", "two"] {
        ids.push(
            worker
                .start(note::Machine::new(note::Draft { text: text.into() }))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        while worker.get(*id).await.unwrap().status != ExecutionStatus::Waiting {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let token = "correct horse battery staple";
    let app = router(
        SqliteStore::open_client(&path).unwrap(),
        ConsoleOptions::default().actions(token),
    );
    let (a, b) = (ids[0], ids[1]);
    let page = format!("/executions/{a}");
    let act = format!("/executions/{a}/act");

    // Not logged in: a link, no forms; an action is refused.
    let (_, anonymous) = get(&app, &page).await;
    assert!(anonymous.contains("href=\"/login\""), "{anonymous}");
    assert!(!anonymous.contains("name=\"csrf\""));
    let (status, _, _) = post(&app, &act, None, &[("action", "cancel"), ("csrf", "x")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A wrong token: refused.
    let (status, _, _) = post(&app, "/login", None, &[("token", "guess"), ("name", "eve")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The right one: a session.
    let (status, headers, _) =
        post(&app, "/login", None, &[("token", token), ("name", "alice")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let logged = get_as(&app, &page, &cookie).await;
    let csrf = logged
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 32);
    assert!(logged.contains("id=\"cancel\"") && logged.contains("id=\"complete\""));
    // Another session's (or a forged) CSRF value: refused.
    let (status, _, _) = post(
        &app,
        &act,
        Some(&cookie),
        &[
            ("action", "cancel"),
            ("csrf", "00000000000000000000000000000000"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Confirmed first, then applied, and recorded with who did it.
    let (status, _, confirm) = post(
        &app,
        &act,
        Some(&cookie),
        &[("action", "cancel"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("Really <b>cancel</b>"), "{confirm}");
    assert_eq!(
        worker.get(a).await.unwrap().status,
        ExecutionStatus::Waiting
    );
    let (status, headers, _) = post(
        &app,
        &act,
        Some(&cookie),
        &[("action", "cancel"), ("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], page.as_str());
    assert_eq!(
        worker.get(a).await.unwrap().status,
        ExecutionStatus::Cancelled
    );
    let history = worker.history(a).await.unwrap().to_string();
    assert!(history.contains("by console:alice"), "{history}");
    // Completing a wait through the form: checked by the server against the machine.
    let act_b = format!("/executions/{b}/act");
    let complete = |next: &'static str| {
        let (app, act_b, cookie, csrf) = (app.clone(), act_b.clone(), cookie.clone(), csrf.clone());
        async move {
            let form = [
                ("action", "complete"),
                ("csrf", csrf.as_str()),
                ("confirm", "yes"),
                ("next", next),
            ];
            post(&app, &act_b, Some(&cookie), &form).await
        }
    };
    let wrong = r#"{"Rejected":{"text":"<i>no</i>"}}"#;
    let (status, _, refused) = complete(wrong).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        refused.contains("leads to `Read`, not to `Rejected`"),
        "{refused}"
    );
    let right = r#"{"Read":{"text":"two, read"}}"#;
    let (status, _, _) = complete(right).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(worker.finished(b).await.unwrap().state_name, "Read");
    let history = worker.history(b).await.unwrap().to_string();
    assert!(
        history.contains("answered by hand by console:alice"),
        "{history}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_read_only_console_has_no_login_and_takes_no_action() {
    let app = router(
        SqliteStore::open(fresh("read-only")).unwrap(),
        ConsoleOptions::default(),
    );
    let (status, _, _) = post(&app, "/login", None, &[("token", ""), ("name", "eve")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = fsm_core::ExecutionId::from_u128(5);
    let (status, _, _) = post(
        &app,
        &format!("/executions/{id}/act"),
        None,
        &[("action", "cancel"), ("csrf", "")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_page_shows_what_the_consoles_monitor_raised() {
    let path = fresh("alerts");
    let worker = board(&path);
    let id = worker
        .start(note::Machine::new(note::Draft {
            text: "unread".into(),
        }))
        .await
        .unwrap();
    while worker.get(id).await.unwrap().status != ExecutionStatus::Waiting {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let quiet = router(
        SqliteStore::open_client(&path).unwrap(),
        ConsoleOptions::default(),
    );
    let (_, page) = get(&quiet, "/alerts").await;
    assert!(page.contains("runs no monitor"), "{page}");
    let rules = vec![fsm_core::Rule::WaitLongerThan(Duration::from_millis(100))];
    let app = router(
        SqliteStore::open_client(&path).unwrap(),
        ConsoleOptions::default().monitor(rules, Duration::from_millis(50)),
    );
    let mut page = String::new();
    for _ in 0..100 {
        page = get(&app, "/alerts").await.1;
        if page.contains("<table class=\"alerts\" id=\"firing\">") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(page.contains("<td>wait too long</td>"), "{page}");
    assert!(
        page.contains(&format!("href=\"/executions/{id}\"")),
        "{page}"
    );
    worker.shutdown().await;
}
