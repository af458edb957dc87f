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
    let dir = std::env::temp_dir().join(format!("fsm-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notes.db");
    let worker = Executor::<Note, Board>::builder(Board)
        .durable(SqliteStore::open(&path).unwrap())
        .unwrap();
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

    // Live: one stream per page, fed by the shared query.
    let response = app
        .clone()
        .oneshot(Request::get("/live").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: live\ndata: "), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(json["counts"]["waiting"], 1);
    drop(store);
    worker.shutdown().await;
}

#[tokio::test]
async fn it_listens_beyond_loopback_only_when_asked() {
    let dir = std::env::temp_dir().join(format!("fsm-console-lo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(dir.join("x.db")).unwrap();
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
