//! The export to Amazon States Language: a golden file for the checkout, and every exported
//! machine validated by `statelint` (PyPI), which `.ci/run` installs; without it the lint
//! test says it was skipped, in a line the test prints.

#[allow(dead_code)]
#[path = "../examples/checkout.rs"]
mod example;

use std::path::{Path, PathBuf};
use std::process::Command;

use fsm_core::views::Asl;
use fsm_core::{Definition, Fsm};

/// A machine with every kind of route: a catch-all, a timeout route, a capped backoff, a wait.
#[derive(Fsm)]
enum Import {
    #[fsm(
        initial,
        on(fetch => Parsed | Empty),
        retry(max_attempts = 4, interval_ms = 250, backoff_rate = 1.5, max_delay_ms = 2500, jitter = full),
        timeout_ms = 1500,
        catch(timeout => Slow),
        catch(_ => Broken)
    )]
    Queued,
    #[fsm(wait, on(approve => Imported))]
    Parsed,
    #[fsm(on(retry_later => Queued))]
    Slow,
    #[fsm(terminal)]
    Imported,
    #[fsm(terminal)]
    Empty,
    #[fsm(terminal(failure))]
    Broken,
}

fn machines() -> Vec<(&'static str, &'static Definition)> {
    vec![
        ("checkout", example::Checkout::DEFINITION),
        ("import", Import::DEFINITION),
    ]
}

#[test]
fn the_checkout_exports_as_its_golden_file() {
    let text = Asl::new(example::Checkout::DEFINITION).to_json_pretty();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asl/checkout.asl.json");
    if std::env::var_os("FSM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, want, "{} differs from the export", path.display());
}

#[test]
fn retries_routes_and_timeouts_map_to_their_asl_fields() {
    let asl = Asl::new(Import::DEFINITION)
        .resource(|state| format!("arn:aws:lambda:eu-west-1:111111111111:function:import-{state}"))
        .to_value();
    let queued = &asl["States"]["Queued"];
    assert_eq!(
        queued["Resource"],
        "arn:aws:lambda:eu-west-1:111111111111:function:import-Queued"
    );
    assert_eq!(queued["TimeoutSeconds"], 2, "1.5 s rounds up");
    let retry = &queued["Retry"];
    assert_eq!(retry[0]["MaxAttempts"], 0, "fatal errors are not retried");
    assert_eq!(retry[1]["ErrorEquals"], serde_json::json!(["States.ALL"]));
    assert_eq!(retry[1]["MaxAttempts"], 4);
    assert_eq!(retry[1]["IntervalSeconds"], 1);
    assert!(retry[1]["BackoffRate"].is_f64());
    assert_eq!(retry[1]["BackoffRate"], 1.5);
    assert_eq!(retry[1]["MaxDelaySeconds"], 3);
    assert_eq!(retry[1]["JitterStrategy"], "FULL");
    let catch = &queued["Catch"];
    assert_eq!(
        catch[0]["ErrorEquals"],
        serde_json::json!(["States.Timeout", "timeout", "timeout.fatal"])
    );
    assert_eq!(
        catch[1]["ErrorEquals"],
        serde_json::json!(["States.ALL"]),
        "the catch-all last"
    );
    assert_eq!(catch[1]["Next"], "Queued.catch.Broken");
    assert_eq!(asl["States"]["Queued.catch.Broken"]["Next"], "Broken");
    assert_eq!(queued["Next"], "Queued.next");
    assert_eq!(asl["States"]["Queued.next"]["Default"], "Queued.unexpected");
    assert_eq!(
        asl["States"]["Parsed"]["Resource"],
        "arn:aws:states:::lambda:invoke.waitForTaskToken"
    );
    assert_eq!(asl["States"]["Broken"]["Type"], "Fail");
    assert_eq!(asl["States"]["Empty"]["Type"], "Succeed");
}

/// `statelint`, from `FSM_STATELINT` or `PATH`.
fn statelint() -> Option<PathBuf> {
    let path = std::env::var_os("FSM_STATELINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("statelint"));
    Command::new(&path)
        .arg("--help")
        .output()
        .ok()
        .map(|_| path)
}

#[test]
fn statelint_accepts_every_export() {
    let Some(lint) = statelint() else {
        let line = "SKIPPED statelint_accepts_every_export: statelint (PyPI) not found; .ci/run installs it";
        assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
        println!("{line}");
        return;
    };
    for (name, def) in machines() {
        let file = std::env::temp_dir().join(format!("fsm-asl-{}-{name}.json", std::process::id()));
        std::fs::write(&file, Asl::new(def).to_json_pretty()).unwrap();
        let out = Command::new(&lint).arg(&file).output().unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "statelint rejects {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("statelint accepted {} exports", machines().len());
}

/// Where the step adapter example was built (`cargo test` builds the examples).
fn adapter_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    profile
        .join("examples")
        .join(format!("step_adapter{}", std::env::consts::EXE_SUFFIX))
}

/// The scripted services of `examples/step_adapter.rs`.
fn scripted_services() -> example::Services {
    use std::collections::HashMap;
    use std::sync::Mutex;
    example::Services {
        stock: Mutex::new(HashMap::from([
            ("mug".to_string(), 100),
            ("tea".to_string(), 100),
        ])),
        gateway_failures: Mutex::new(HashMap::from([(1, 2), (3, 1_000)])),
        declined: vec![2],
        ..example::Services::default()
    }
}

#[test]
fn the_exported_checkout_takes_the_executors_path_in_an_asl_interpreter() {
    let dir = std::env::var_os("FSM_ASL_INTERPRETER").map(PathBuf::from);
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(dir) =
        dir.filter(|d| d.join("node_modules/aws-local-stepfunctions").exists() && node_ok)
    else {
        let line = "SKIPPED the_exported_checkout_takes_the_executors_path_in_an_asl_interpreter: \
                    aws-local-stepfunctions (npm, in $FSM_ASL_INTERPRETER/node_modules) or node not found; .ci/run installs it";
        assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
        println!("{line}");
        return;
    };
    let adapter = adapter_binary();
    assert!(
        adapter.exists(),
        "{} is built by `cargo test`",
        adapter.display()
    );
    let definition = std::env::temp_dir().join(format!("fsm-asl-run-{}.json", std::process::id()));
    std::fs::write(
        &definition,
        Asl::new(example::Checkout::DEFINITION).to_json_pretty(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asl/run.mjs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    // A retried step (the gateway fails twice), a declined payment, a caught error (the
    // gateway is down: retries, then the route to `PaymentDeclined`), a plain success.
    for (order, scenario) in [
        (1, "retried"),
        (2, "declined"),
        (3, "caught"),
        (7, "success"),
    ] {
        let start = example::Checkout::Submitted {
            order,
            items: vec!["mug".to_string()].into(),
            gift: false,
            signature: false,
        };
        // Our executor, with the same scripted services.
        let executor = fsm_core::Executor::<example::Checkout, _>::new(scripted_services());
        let outcome = rt.block_on(executor.run(start.clone()));
        let mut ours = vec![start.state_name().to_owned()];
        let mut retries = 0;
        for e in outcome.history.events() {
            match &e.kind {
                fsm_core::EventKind::Transition { to, .. } => ours.push(to.to_string()),
                fsm_core::EventKind::RetryScheduled { .. } => retries += 1,
                _ => {}
            }
        }
        // The interpreter, its Tasks calling the step adapter.
        let input = serde_json::json!({
            "state": "Submitted",
            "data": serde_json::to_value(&start).unwrap(),
            "step": 0,
            "execution": outcome.id.to_string(),
        });
        let out = Command::new("node")
            .arg(&script)
            .arg(&definition)
            .arg(&adapter)
            .arg(input.to_string())
            .env("FSM_ASL_INTERPRETER", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let theirs: Vec<String> = report["entered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .filter(|s| !s.contains('.'))
            .collect();
        assert_eq!(
            theirs, ours,
            "{scenario}: the interpreter's path, then ours"
        );
        assert_eq!(
            report["retried"].as_array().unwrap().len(),
            retries,
            "{scenario}: retries"
        );
        assert_eq!(
            report["caught"].as_array().unwrap().len(),
            usize::from(scenario == "caught"),
            "{scenario}: caught errors"
        );
        match outcome.status {
            fsm_core::Status::Succeeded => {
                assert_eq!(report["status"], "succeeded", "{scenario}");
                assert_eq!(
                    report["output"]["data"],
                    serde_json::to_value(&outcome.state).unwrap()
                );
                assert_eq!(report["output"]["step"], ours.len() - 1);
            }
            _ => {
                assert_eq!(report["status"], "failed", "{scenario}");
                assert_eq!(
                    report["error"],
                    format!("fsm.{}", outcome.state.state_name())
                );
            }
        }
    }
    let _ = std::fs::remove_file(&definition);
    println!("aws-local-stepfunctions took the executor's path in 4 scenarios");
}
