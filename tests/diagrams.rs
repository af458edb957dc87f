//! Diagrams: golden files for the checkout's Mermaid and DOT, with and without executed
//! paths; every golden file rendered by the real tools (Graphviz's `dot`, mermaid-cli's
//! `mmdc` driving Chromium); the README's Mermaid block is what the code generates.
//!
//! `FSM_BLESS=1 cargo test --test diagrams` rewrites the golden files (read them before
//! committing). `.ci/run` installs Graphviz, Chromium and mermaid-cli; without them the render
//! tests say they were skipped, in a line the test prints.

#[allow(dead_code)]
#[path = "../examples/checkout.rs"]
mod example;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use example::checkout::{Machine, Submitted};
use example::{Checkout, Services};
use fsm_core::views::Diagram;
use fsm_core::{Context, Executor, Fsm, History, StepError};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagrams")
}

/// Compares `text` with the golden file `name`, or writes it with `FSM_BLESS=1`.
fn golden(name: &str, text: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("FSM_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (FSM_BLESS=1 writes it)", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs from the generated diagram",
        path.display()
    );
}

/// The history of one checkout with the example's services (no latency), on tokio's paused
/// clock so that retries do not wait.
fn checkout_history(order: u32, gateway_failures: u32, declined: bool) -> History {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let services = Services {
        stock: Mutex::new(HashMap::from([("mug".to_string(), 10)])),
        gateway_failures: Mutex::new(HashMap::from([(order, gateway_failures)])),
        declined: if declined { vec![order] } else { vec![] },
        ..Services::default()
    };
    let executor = Executor::<Checkout, _>::new(services);
    let start = Machine::new(Submitted {
        order,
        items: vec!["mug".to_string()].into(),
        gift: true,
        signature: false,
    });
    rt.block_on(executor.run(start)).history
}

/// A small machine whose step fails for good, for a path that ends in an error.
#[derive(Fsm, Debug, Clone)]
enum Upload {
    #[fsm(initial, on(send => Sent), retry(max_attempts = 2, interval_ms = 10))]
    Pending,
    #[fsm(terminal)]
    Sent,
}

struct Flaky;

impl upload::Steps for Flaky {
    async fn pending(
        &self,
        _: upload::Machine<upload::Pending>,
        _: Context,
    ) -> Result<upload::Machine<upload::Sent>, StepError> {
        Err(StepError::retryable("network", "connection reset"))
    }
}

fn failed_upload() -> History {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let executor = Executor::<Upload, _>::new(Flaky);
    rt.block_on(executor.run(upload::Machine::new(upload::Pending)))
        .history
}

/// Every diagram the tests keep, by golden file name.
fn diagrams() -> Vec<(&'static str, String)> {
    let def = Checkout::DEFINITION;
    // A gift order whose gateway fails twice before it charges.
    let retried = checkout_history(1, 2, false);
    // A declined card: released and cancelled.
    let declined = checkout_history(2, 0, true);
    // The gateway never answers: the catch route takes the order to `PaymentDeclined`.
    let caught = checkout_history(3, 100, false);
    let failed = failed_upload();
    vec![
        ("checkout.mmd", Diagram::new(def).mermaid()),
        ("checkout.dot", Diagram::new(def).dot()),
        (
            "checkout-retried.mmd",
            Diagram::new(def).with_path(&retried).mermaid(),
        ),
        (
            "checkout-retried.dot",
            Diagram::new(def).with_path(&retried).dot(),
        ),
        (
            "checkout-declined.mmd",
            Diagram::new(def).with_path(&declined).mermaid(),
        ),
        (
            "checkout-declined.dot",
            Diagram::new(def).with_path(&declined).dot(),
        ),
        (
            "checkout-caught.mmd",
            Diagram::new(def).with_path(&caught).mermaid(),
        ),
        (
            "checkout-caught.dot",
            Diagram::new(def).with_path(&caught).dot(),
        ),
        (
            "upload-failed.mmd",
            Diagram::new(Upload::DEFINITION)
                .with_path(&failed)
                .mermaid(),
        ),
        (
            "upload-failed.dot",
            Diagram::new(Upload::DEFINITION).with_path(&failed).dot(),
        ),
        ("checkout.svg", Diagram::new(def).svg()),
        (
            "checkout-retried.svg",
            Diagram::new(def).with_path(&retried).svg(),
        ),
        (
            "checkout-caught.svg",
            Diagram::new(def).with_path(&caught).svg(),
        ),
        (
            "upload-failed.svg",
            Diagram::new(Upload::DEFINITION).with_path(&failed).svg(),
        ),
    ]
}

/// The classes of the SVG element of `kind` (`state`, `edge`) whose attribute `key` is
/// `value`.
fn svg_classes(svg: &str, kind: &str, key: &str, value: &str) -> Vec<String> {
    svg.split("<g class=\"")
        .skip(1)
        .filter_map(|g| {
            let (classes, rest) = g.split_once('"')?;
            let tag = rest.split('>').next()?;
            let classes: Vec<String> = classes.split(' ').map(str::to_owned).collect();
            (classes[0] == kind && tag.contains(&format!("{key}=\"{value}\""))).then_some(classes)
        })
        .flatten()
        .collect()
}

#[test]
fn the_svg_marks_the_path_and_escapes_what_it_shows() {
    let def = Checkout::DEFINITION;
    let plain = Diagram::new(def).svg();
    assert!(
        plain.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{plain}"
    );
    assert!(!plain.contains(" taken") && !plain.contains(" visited"));
    for s in def.states {
        assert!(
            plain.contains(&format!("data-state=\"{}\"", s.name)),
            "{}",
            s.name
        );
    }
    let retried = Diagram::new(def)
        .with_path(&checkout_history(1, 2, false))
        .svg();
    let state = |svg: &str, name: &str| svg_classes(svg, "state", "data-state", name);
    assert_eq!(
        state(&retried, "Shipped"),
        ["state", "success", "visited", "current"]
    );
    assert_eq!(state(&retried, "Wrapped"), ["state", "visited"]);
    assert_eq!(state(&retried, "PaymentDeclined"), ["state"]);
    assert!(retried.contains(">3 attempts</text>"), "{retried}");
    let from = |svg: &str, name: &str| svg_classes(svg, "edge", "data-from", name);
    assert!(from(&retried, "Wrapped").contains(&"taken".to_owned()));
    assert!(retried.contains("data-from=\"Reserved\" data-to=\"PaymentDeclined\""));
    let caught = Diagram::new(def)
        .with_path(&checkout_history(3, 100, false))
        .svg();
    // The catch route taken: dashed red, thick.
    assert!(
        caught.contains(
            "<g class=\"edge catch taken\" data-from=\"Reserved\" data-to=\"PaymentDeclined\""
        ),
        "{caught}"
    );
    let failed = Diagram::new(Upload::DEFINITION)
        .with_path(&failed_upload())
        .svg();
    assert_eq!(
        state(&failed, "Pending"),
        ["state", "visited", "current", "failed"]
    );
    assert!(failed.contains(">failed here</text>"));
}

#[test]
fn diagrams_match_their_golden_files() {
    for (name, text) in diagrams() {
        golden(name, &text);
    }
}

#[test]
fn a_path_marks_what_the_execution_did() {
    let retried = Diagram::new(Checkout::DEFINITION)
        .with_path(&checkout_history(1, 2, false))
        .mermaid();
    assert!(retried.contains("<small>3 attempts</small>"), "{retried}");
    // The transitions taken are drawn thick, by their link numbers (the start's is 0):
    // Submitted -> Reserved is 1, Reserved -> Paid 3.
    assert!(
        retried.contains("    Reserved -->|\"charge\"| Paid\n"),
        "{retried}"
    );
    assert!(
        retried.contains("linkStyle 3 stroke:#1e8449,stroke-width:4px"),
        "{retried}"
    );
    assert!(
        !retried.contains("linkStyle 4 stroke:#1e8449"),
        "Reserved -> PaymentDeclined was not taken: {retried}"
    );
    assert!(
        retried.contains("class Submitted,Reserved,Paid,Wrapped,Shipped visited"),
        "{retried}"
    );
    let caught = Diagram::new(Checkout::DEFINITION).with_path(&checkout_history(3, 100, false));
    let mermaid = caught.mermaid();
    assert!(
        mermaid
            .contains("Reserved -.->|\"on error gateway_unavailable or timeout\"| PaymentDeclined"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("linkStyle 11 stroke:#c0392b,stroke-width:4px,color:#c0392b"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("class Cancelled reached_failure"),
        "{mermaid}"
    );
    assert!(
        caught.dot().contains("Reserved -> PaymentDeclined [label=\"on error gateway_unavailable or timeout\", style=dashed, color=\"#c0392b\", fontcolor=\"#c0392b\", penwidth=2.5]"),
        "{}",
        caught.dot()
    );
    let failed = Diagram::new(Upload::DEFINITION)
        .with_path(&failed_upload())
        .mermaid();
    assert!(failed.contains("<small>failed here</small>"), "{failed}");
    assert!(failed.contains("class Pending failed"), "{failed}");
}

/// A step with a catch-all route.
#[derive(fsm_core::Fsm)]
enum Job {
    #[fsm(initial, on(run => Done), catch(_ => Broken))]
    Queued,
    #[fsm(terminal)]
    Done,
    #[fsm(terminal(failure))]
    Broken,
}

#[test]
fn a_catch_all_route_reads_on_any_error() {
    let d = Diagram::new(Job::DEFINITION);
    assert!(
        d.mermaid().contains("Queued -.->|\"on any error\"| Broken"),
        "{}",
        d.mermaid()
    );
    assert!(d.dot().contains("label=\"on any error\""), "{}", d.dot());
}

#[test]
fn the_readme_shows_the_checkout_as_the_code_draws_it() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```mermaid\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").unwrap()])
        .collect();
    let diagrams = diagrams();
    let want = |name: &str| diagrams.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(
        blocks.len(),
        2,
        "the README shows the checkout and one executed path"
    );
    assert_eq!(
        blocks[0],
        want("checkout.mmd"),
        "the README's diagram is not what `Diagram::new(Checkout::DEFINITION).mermaid()` gives"
    );
    assert_eq!(
        blocks[1],
        want("checkout-retried.mmd"),
        "the README's executed path is not what the code draws for that order"
    );
}

/// A tool from `PATH` (or the variable `env`), if it answers `version_flag`.
fn tool(env: &str, name: &str, version_flag: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    Command::new(&path)
        .arg(version_flag)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| path)
}

/// Says that a test could not run for want of `what`; fails instead where the tools are
/// required (`FSM_REQUIRE_TOOLS`, set by `.ci/run`).
fn skipped(test: &str, what: &str) {
    let line = format!("SKIPPED {test}: {what} not found; .ci/run installs it");
    assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
    println!("{line}");
}

#[test]
fn graphviz_renders_every_dot_diagram() {
    let Some(dot) = tool("FSM_DOT", "dot", "-V") else {
        return skipped("graphviz_renders_every_dot_diagram", "`dot` (Graphviz)");
    };
    let mut rendered = 0;
    for (name, text) in diagrams().into_iter().filter(|(n, _)| n.ends_with(".dot")) {
        let file = std::env::temp_dir().join(format!("fsm-{}-{name}", std::process::id()));
        std::fs::write(&file, &text).unwrap();
        let out = Command::new(&dot).arg("-Tsvg").arg(&file).output().unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "dot rejected {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        rendered += 1;
    }
    println!("graphviz rendered {rendered} diagrams");
}

#[test]
fn mermaid_renders_every_mermaid_diagram() {
    let Some(mmdc) = tool("FSM_MMDC", "mmdc", "--version") else {
        return skipped(
            "mermaid_renders_every_mermaid_diagram",
            "mermaid-cli (`mmdc`, or FSM_MMDC)",
        );
    };
    let dir = std::env::temp_dir().join(format!("fsm-mermaid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // One document with every diagram: one browser for all of them.
    let mut doc = String::new();
    let names: Vec<&str> = diagrams()
        .iter()
        .filter(|(n, _)| n.ends_with(".mmd"))
        .map(|(n, _)| *n)
        .collect();
    for (name, text) in diagrams().into_iter().filter(|(n, _)| n.ends_with(".mmd")) {
        doc.push_str(&format!("# {name}\n\n```mermaid\n{text}```\n\n"));
    }
    std::fs::write(dir.join("all.md"), doc).unwrap();
    let config = dir.join("puppeteer.json");
    let chromium = std::env::var("FSM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::fs::write(
        &config,
        format!(
            r#"{{"executablePath": "{chromium}", "args": ["--no-sandbox", "--headless", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]}}"#
        ),
    )
    .unwrap();
    let out = Command::new(&mmdc)
        .arg("-i")
        .arg(dir.join("all.md"))
        .arg("-o")
        .arg(dir.join("out.md"))
        .arg("-p")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mermaid-cli failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let svgs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .collect();
    assert_eq!(svgs.len(), names.len(), "one SVG per diagram");
    for svg in &svgs {
        let text = std::fs::read_to_string(svg.path()).unwrap();
        assert!(
            text.contains("<svg") && !text.contains("Syntax error"),
            "{}",
            svg.path().display()
        );
        // Each state is drawn.
        assert!(text.contains("Submitted") || text.contains("Pending"));
    }
    println!("mermaid rendered {} diagrams", svgs.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_svg_is_well_formed_xml() {
    let Some(python) = tool("FSM_PYTHON", "python3", "--version") else {
        return skipped("every_svg_is_well_formed_xml", "python3 (its XML parser)");
    };
    for (name, text) in diagrams().into_iter().filter(|(n, _)| n.ends_with(".svg")) {
        let file = std::env::temp_dir().join(format!("fsm-{}-{name}", std::process::id()));
        std::fs::write(&file, &text).unwrap();
        let out = Command::new(&python)
            .args([
                "-c",
                "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])",
            ])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{name} is not well-formed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
