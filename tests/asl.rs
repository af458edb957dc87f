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
        ("shipment", Shipment::DEFINITION),
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

/// The checkout's steps, recording the idempotency key each step and route was given.
struct Keys {
    services: example::Services,
    keys: std::sync::Mutex<Vec<(String, String)>>,
}

impl Keys {
    fn key(&self, state: &str, cx: &fsm_core::Context) {
        self.keys
            .lock()
            .unwrap()
            .push((state.to_owned(), cx.idempotency_key().to_string()));
    }
}

mod keys {
    use super::example::checkout::*;
    use super::example::{notification, Notification};
    use super::Keys;
    use fsm_core::{Context, StepError, TaskToken};

    impl Steps for Keys {
        async fn submitted(
            &self,
            o: Machine<Submitted>,
            cx: Context,
        ) -> Result<SubmittedNext, StepError> {
            self.key("Submitted", &cx);
            self.services.submitted(o, cx).await
        }
        async fn reserved(
            &self,
            o: Machine<Reserved>,
            cx: Context,
        ) -> Result<ReservedNext, StepError> {
            self.key("Reserved", &cx);
            self.services.reserved(o, cx).await
        }
        async fn paid(&self, o: Machine<Paid>, cx: Context) -> Result<PaidNext, StepError> {
            self.key("Paid", &cx);
            self.services.paid(o, cx).await
        }
        async fn out_for_delivery(
            &self,
            o: Machine<OutForDelivery>,
            cx: Context,
            token: TaskToken,
        ) -> Result<(), StepError> {
            self.key("OutForDelivery", &cx);
            self.services.out_for_delivery(o, cx, token).await
        }
        async fn wrapped(
            &self,
            o: Machine<Wrapped>,
            cx: Context,
        ) -> Result<Machine<Shipped>, StepError> {
            self.key("Wrapped", &cx);
            self.services.wrapped(o, cx).await
        }
        async fn payment_declined(
            &self,
            o: &Machine<PaymentDeclined>,
            cx: Context,
        ) -> Result<(Notification, Notification), StepError> {
            self.key("PaymentDeclined", &cx);
            self.services.payment_declined(o, cx).await
        }
        fn join_payment_declined(
            &self,
            o: Machine<PaymentDeclined>,
            customer: fsm_core::Ended<Notification>,
            support: fsm_core::Ended<Notification>,
        ) -> Machine<Cancelled> {
            self.services.join_payment_declined(o, customer, support)
        }
        fn catch_reserved_to_payment_declined(
            &self,
            failed: Reserved,
            error: &StepError,
        ) -> PaymentDeclined {
            self.services
                .catch_reserved_to_payment_declined(failed, error)
        }
    }

    /// The notifications of a declined order: branches, run with the same handlers.
    impl notification::Steps for Keys {
        async fn queued(
            &self,
            m: notification::Machine<notification::Queued>,
            cx: Context,
        ) -> Result<notification::Machine<notification::Sent>, StepError> {
            self.services.queued(m, cx).await
        }
    }
}

/// Consecutive repeats (a retried step's attempts) once.
fn once(mut keys: Vec<(String, String)>) -> Vec<(String, String)> {
    keys.dedup();
    keys
}

/// Where aws-local-stepfunctions is installed, or a line that says `test` was skipped (a
/// failure where the tools are required).
fn interpreter(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FSM_ASL_INTERPRETER").map(PathBuf::from);
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let dir = dir.filter(|d| d.join("node_modules/aws-local-stepfunctions").exists() && node_ok);
    if dir.is_none() {
        let line = format!(
            "SKIPPED {test}: aws-local-stepfunctions (npm, in $FSM_ASL_INTERPRETER/node_modules) \
             or node not found; .ci/run installs it"
        );
        assert!(std::env::var_os("FSM_REQUIRE_TOOLS").is_none(), "{line}");
        println!("{line}");
    }
    dir
}

/// The export's input that starts where the executor's run of execution `id` started, in
/// `start`: its envelope at step 0.
fn start_input<M: Fsm + serde::Serialize>(
    start: &M,
    id: fsm_core::ExecutionId,
) -> serde_json::Value {
    serde_json::json!({
        "state": start.state_name(),
        "data": serde_json::to_value(start).unwrap(),
        "step": 0,
        "execution": id.to_string(),
    })
}

/// The states of the exported machine itself that the interpreter's run entered, in order
/// (not the Choices, routes and branches the export adds, whose names hold a `.`).
fn entered(report: &serde_json::Value) -> Vec<String> {
    (report["entered"].as_array().unwrap().iter())
        .map(|s| s.as_str().unwrap().to_owned())
        .filter(|s| !s.contains('.'))
        .collect()
}

/// Runs the export in `definition` in the interpreter of `dir` from `input`, its Tasks
/// calling `adapter` (with `args`); returns its report.
fn interpret(
    dir: &Path,
    definition: &Path,
    adapter: &Path,
    args: &[&str],
    input: &serde_json::Value,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asl/run.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(definition)
        .arg(adapter)
        .arg(input.to_string())
        .args(args)
        .env("FSM_ASL_INTERPRETER", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_exported_checkout_takes_the_executors_path_in_an_asl_interpreter() {
    let Some(dir) =
        interpreter("the_exported_checkout_takes_the_executors_path_in_an_asl_interpreter")
    else {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    // A retried step (the gateway fails twice), a declined payment, a caught error (the
    // gateway is down: retries, then the route to `PaymentDeclined`), a plain success, and a
    // wait for the carrier's task token.
    for (order, scenario) in [
        (1, "retried"),
        (2, "declined"),
        (3, "caught"),
        (7, "success"),
        (5, "waited"),
    ] {
        let start = example::Checkout::Submitted {
            order,
            items: vec!["mug".to_string()].into(),
            gift: false,
            signature: scenario == "waited",
        };
        // Our executor, with the same scripted services; the carrier signs at once.
        let keys = Keys {
            services: scripted_services(),
            keys: Default::default(),
        };
        let executor = fsm_core::Executor::<example::Checkout, _>::new(keys);
        let outcome = rt.block_on(async {
            let run = executor.run(start.clone());
            let carrier = async {
                loop {
                    let handed = executor.steps().services.carrier.lock().unwrap().pop();
                    if let Some((_, token)) = handed {
                        executor
                            .complete::<example::checkout::OutForDelivery, _>(&token, |o| {
                                o.deliver(|d| example::checkout::Delivered {
                                    order: d.order,
                                    tracking: d.tracking,
                                    signed_by: "J. Doe".into(),
                                })
                            })
                            .unwrap();
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            };
            tokio::pin!(run);
            tokio::select! {
                outcome = &mut run => outcome,
                () = carrier => run.await,
            }
        });
        let mut ours = vec![start.state_name().to_owned()];
        let mut retries = 0;
        for e in outcome.history.events() {
            match &e.kind {
                fsm_core::EventKind::Transition { to, .. } => ours.push(to.to_string()),
                fsm_core::EventKind::RetryScheduled { .. } => retries += 1,
                _ => {}
            }
        }
        let our_keys = once(executor.steps().keys.lock().unwrap().clone());
        // The interpreter, its Tasks calling the step adapter.
        let input = start_input(&start, outcome.id);
        let report = interpret(&dir, &definition, &adapter, &[], &input);
        let theirs = entered(&report);
        assert_eq!(
            theirs, ours,
            "{scenario}: the interpreter's path, then ours"
        );
        // Each step the interpreter ran had the idempotency key the executor gave it: the
        // execution and the step number travel through every Task, catch route and wait.
        let their_keys: Vec<(String, String)> = once(
            report["tasks"]
                .as_array()
                .unwrap()
                .iter()
                // The machine's own steps (a branch's Tasks name their machine; a join's Task
                // runs the fanning-out state's step again, with the same key).
                .filter(|t| {
                    let task = t["task"].as_str().unwrap();
                    !task.contains(".catch.") && t.get("machine").is_none()
                })
                .map(|t| {
                    let key = format!("{}-step-{}", t["execution"].as_str().unwrap(), t["step"]);
                    (t["state"].as_str().unwrap().to_owned(), key)
                })
                .collect(),
        );
        assert_eq!(
            their_keys, our_keys,
            "{scenario}: keys, the interpreter's then ours"
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
    println!("aws-local-stepfunctions took the executor's path, and keys, in 5 scenarios");
}

#[test]
fn the_adapters_future_can_be_spawned() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let services = std::sync::Arc::new(scripted_services());
    let start = example::Checkout::Submitted {
        order: 7,
        items: vec!["mug".to_string()].into(),
        gift: false,
        signature: false,
    };
    let input = serde_json::json!({
        "task": "Submitted",
        "state": "Submitted",
        "data": serde_json::to_value(&start).unwrap(),
        "step": 0,
        "execution": "0190b3c5-0000-7000-8000-000000000001",
    });
    let output = rt
        .block_on(async {
            tokio::spawn(async move {
                fsm_core::views::run_task::<example::Checkout, _>(&*services, &input).await
            })
            .await
        })
        .unwrap()
        .unwrap();
    assert_eq!(output["state"], "Reserved");
    assert_eq!(output["step"], 1);
}

/// A fetch that fails as told: a catch-all route, a route for one kind, retries.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Fetch {
    #[fsm(
        initial,
        on(fetch => Fetched),
        retry(max_attempts = 3, interval_ms = 10),
        catch(parse => Unparsed),
        catch(_ => Broken)
    )]
    Queued { fatal: bool, kind: String },
    #[fsm(terminal)]
    Fetched,
    #[fsm(terminal(failure))]
    Unparsed,
    #[fsm(terminal(failure))]
    Broken { why: String },
}

struct Fetcher;

impl fetch::Steps for Fetcher {
    async fn queued(
        &self,
        q: fetch::Machine<fetch::Queued>,
        _: fsm_core::Context,
    ) -> Result<fetch::Machine<fetch::Fetched>, fsm_core::StepError> {
        let Fetch::Queued { fatal, kind } = Fetch::from(q) else {
            unreachable!()
        };
        Err(if fatal {
            fsm_core::StepError::fatal(kind, "it broke")
        } else {
            fsm_core::StepError::retryable(kind, "try again")
        })
    }

    fn catch_queued_to_unparsed(
        &self,
        _: fetch::Queued,
        _: &fsm_core::StepError,
    ) -> fetch::Unparsed {
        fetch::Unparsed
    }

    fn catch_queued_to_broken(&self, _: fetch::Queued, e: &fsm_core::StepError) -> fetch::Broken {
        fetch::Broken {
            why: format!("{}: {}", e.kind(), e.message()),
        }
    }
}

/// Set in the adapter child process of the test below.
const FETCH_ADAPTER: &str = "FSM_TEST_FETCH_ADAPTER";

#[test]
fn fetch_adapter() {
    // The step adapter of `Fetch`, when the interpreter runs this binary as one; else nothing.
    if std::env::var_os(FETCH_ADAPTER).is_some() {
        serve_adapter::<Fetch, _>(&Fetcher);
    }
}

/// The step adapter of `M` with `steps`, as a process: one Task input per line on stdin, one
/// answer per line on stdout (`tests/asl/run.mjs` is the other side).
fn serve_adapter<M, H>(steps: &H)
where
    M: fsm_core::Dispatch<H> + Clone + serde::Serialize + serde::de::DeserializeOwned,
    H: Send + Sync + 'static,
{
    use std::io::{BufRead as _, Write as _};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = std::io::stdout().lock();
    // The test harness has written part of a line: end it.
    let _ = writeln!(out);
    for line in std::io::stdin().lock().lines() {
        let input: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let answer = match rt.block_on(fsm_core::views::run_task::<M, _>(steps, &input)) {
            Ok(output) => serde_json::json!({ "output": output }),
            Err(f) => serde_json::json!({ "Error": f.error, "Cause": f.cause }),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}

#[test]
fn a_fatal_error_is_never_retried_whatever_its_kind_and_is_routed_as_the_executor_routes_it() {
    // The first retrier takes every fatal error, with no attempts.
    let export = Asl::new(Fetch::DEFINITION).to_value();
    let retry = &export["States"]["Queued"]["Retry"];
    assert_eq!(retry[0]["MaxAttempts"], 0);
    let fatal: Vec<&str> = retry[0]["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(fatal, [fsm_core::views::FATAL, "parse.fatal"]);
    let Some(dir) = interpreter(
        "a_fatal_error_is_never_retried_whatever_its_kind_and_is_routed_as_the_executor_routes_it",
    ) else {
        return;
    };
    let definition =
        std::env::temp_dir().join(format!("fsm-asl-fetch-{}.json", std::process::id()));
    std::fs::write(&definition, Asl::new(Fetch::DEFINITION).to_json_pretty()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let me = std::env::current_exe().unwrap();
    // SAFETY: set before the child processes start, read only by them.
    unsafe { std::env::set_var(FETCH_ADAPTER, "1") };
    for (fatal, kind, ends_in) in [
        (true, "disk", "Broken"),
        (true, "parse", "Unparsed"),
        (false, "flaky", "Broken"),
        (false, "parse", "Unparsed"),
    ] {
        let start = Fetch::Queued {
            fatal,
            kind: kind.into(),
        };
        let outcome = rt.block_on(fsm_core::Executor::<Fetch, _>::new(Fetcher).run(start.clone()));
        let retries = outcome
            .history
            .events()
            .iter()
            .filter(|e| matches!(e.kind, fsm_core::EventKind::RetryScheduled { .. }))
            .count();
        assert_eq!(outcome.state.state_name(), ends_in);
        let input = start_input(&start, outcome.id);
        let report = interpret(
            &dir,
            &definition,
            &me,
            &["--exact", "fetch_adapter", "--nocapture", "--quiet"],
            &input,
        );
        let what = format!("fatal {fatal}, kind {kind}");
        assert_eq!(
            report["retried"].as_array().unwrap().len(),
            retries,
            "{what}: retries"
        );
        assert_eq!(report["error"], format!("fsm.{ends_in}"), "{what}");
        if ends_in == "Broken" {
            // The route's handler got the error's kind and message, as the executor's did.
            let Fetch::Broken { why } = &outcome.state else {
                unreachable!()
            };
            let last = report["tasks"].as_array().unwrap().last().unwrap();
            assert_eq!(last["task"], "Queued.catch.Broken", "{what}");
            let cause = last["error"]["Cause"].as_str().unwrap();
            assert!(
                cause.ends_with(why.split(": ").nth(1).unwrap()),
                "{what}: {cause}"
            );
        }
    }
    let _ = std::fs::remove_file(&definition);
}

#[test]
fn the_adapter_checks_its_envelope() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let services = scripted_services();
    let paid = example::Checkout::Paid {
        order: 7,
        payment: "pay_0007".into(),
        gift: false,
        signature: false,
    };
    let good = serde_json::json!({
        "task": "Paid",
        "state": "Paid",
        "data": serde_json::to_value(&paid).unwrap(),
        "step": 2,
        "execution": "0190b3c5-0000-7000-8000-000000000001",
    });
    let run = |input: &serde_json::Value| {
        rt.block_on(fsm_core::views::run_task::<example::Checkout, _>(
            &services, input,
        ))
    };
    let shipped = run(&good).unwrap();
    assert_eq!(
        (shipped["state"].as_str(), shipped["step"].as_u64()),
        (Some("Shipped"), Some(3))
    );
    let refused = |change: &dyn Fn(&mut serde_json::Value), says: &str| {
        let mut input = good.clone();
        change(&mut input);
        let failure = run(&input).unwrap_err();
        assert_eq!(failure.error, "fsm.BadInput", "{says}");
        assert!(failure.cause.contains(says), "{}: {says}", failure.cause);
    };
    // The first Task cannot be made to ship an unpaid order: it runs `Submitted` only.
    refused(
        &|i| i["task"] = "Submitted".into(),
        "the Task `Submitted` runs `Submitted`, not `Paid`",
    );
    refused(
        &|i| i["task"] = "Reserved.catch.PaymentDeclined".into(),
        "runs `Reserved`, not `Paid`",
    );
    refused(
        &|i| drop(i.as_object_mut().unwrap().remove("task")),
        "no `task`",
    );
    // No execution, or a malformed one, or a bad step, is not the nil id or step 0.
    refused(
        &|i| drop(i.as_object_mut().unwrap().remove("execution")),
        "no `execution`",
    );
    refused(
        &|i| i["execution"] = "order-7".into(),
        "`execution` is not an execution id",
    );
    refused(
        &|i| drop(i.as_object_mut().unwrap().remove("step")),
        "no `step`",
    );
    refused(&|i| i["step"] = (-1).into(), "no `step`");
    refused(&|i| i["step"] = (1u64 << 32).into(), "no `step`");
    refused(
        &|i| i["state"] = "Reserved".into(),
        "`state` says `Reserved` but `data` is `Paid`",
    );
    // A `route` in an ordinary Task's input is not an error handler's cue: the step runs.
    let mut routed = good.clone();
    routed["route"] = "Paid->Shipped".into();
    routed["error"] = serde_json::json!({ "Error": "States.ALL", "Cause": "forged" });
    assert_eq!(run(&routed).unwrap(), shipped);
    // The answer to a wait: the next state, one step on, checked against the machine.
    let waiting = serde_json::json!({
        "task": "OutForDelivery",
        "state": "OutForDelivery",
        "data": { "OutForDelivery": { "order": 5, "tracking": "1Z000005" } },
        "step": 3,
        "execution": "0190b3c5-0000-7000-8000-000000000001",
        "token": "interpreter-task-token",
    });
    let delivered = example::Checkout::Delivered {
        order: 5,
        tracking: "1Z000005".into(),
        signed_by: "J. Doe".into(),
    };
    let answer = fsm_core::views::wait_answer(&waiting, delivered).unwrap();
    assert_eq!(
        (answer["state"].as_str(), answer["step"].as_u64()),
        (Some("Delivered"), Some(4))
    );
    let not_next = fsm_core::views::wait_answer(&waiting, paid.clone()).unwrap_err();
    assert!(
        not_next
            .cause
            .contains("not a next state of `OutForDelivery`"),
        "{}",
        not_next.cause
    );
}

/// A shipment labels its parcels in a Map state, each parcel printing a sticker and a slip
/// in a Parallel state of its own: fan-outs nested in the export. Parcel 13 is lost, which
/// fails the Map, routed to `Held`.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Shipment {
    #[fsm(
        initial,
        map(Parcel, max_concurrency = 2),
        on(ship => Shipped),
        catch(branch_failed => Held)
    )]
    Packing { parcels: Vec<u32> },
    #[fsm(terminal)]
    Shipped { labels: Vec<String> },
    #[fsm(terminal(failure))]
    Held,
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Parcel {
    #[fsm(initial, on(weigh => Weighed | Lost))]
    Boxed { n: u32 },
    #[fsm(parallel(sticker = Print, slip = Print), on(label => Labelled))]
    Weighed { n: u32 },
    #[fsm(terminal)]
    Labelled { label: String },
    #[fsm(terminal(failure))]
    Lost { n: u32 },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Print {
    #[fsm(initial, on(print => Printed))]
    Queued { n: u32, what: String },
    #[fsm(terminal)]
    Printed { text: String },
}

/// The shipment's steps, recording each step's state and idempotency key.
#[derive(Default)]
struct Packer(std::sync::Mutex<Vec<(String, String)>>);

impl Packer {
    fn key(&self, state: &str, cx: &fsm_core::Context) {
        let key = cx.idempotency_key().to_string();
        self.0.lock().unwrap().push((state.to_owned(), key));
    }
}

impl shipment::Steps for Packer {
    async fn packing(
        &self,
        s: &shipment::Machine<shipment::Packing>,
        cx: fsm_core::Context,
    ) -> Result<Vec<Parcel>, fsm_core::StepError> {
        self.key("Packing", &cx);
        Ok(s.parcels
            .iter()
            .map(|&n| parcel::Machine::new(parcel::Boxed { n }).into())
            .collect())
    }

    fn join_packing(
        &self,
        s: shipment::Machine<shipment::Packing>,
        parcels: Vec<fsm_core::Ended<Parcel>>,
    ) -> shipment::Machine<shipment::Shipped> {
        let labels = parcels
            .into_iter()
            .map(|p| match p.into_state() {
                Parcel::Labelled { label } => label,
                other => panic!("{other:?}"),
            })
            .collect();
        s.ship(|_| shipment::Shipped { labels })
    }

    fn catch_packing_to_held(
        &self,
        _: shipment::Packing,
        _: &fsm_core::StepError,
    ) -> shipment::Held {
        shipment::Held
    }
}

impl parcel::Steps for Packer {
    async fn boxed(
        &self,
        p: parcel::Machine<parcel::Boxed>,
        cx: fsm_core::Context,
    ) -> Result<parcel::BoxedNext, fsm_core::StepError> {
        self.key("Boxed", &cx);
        Ok(if p.n == 13 {
            p.weigh(|b| parcel::Lost { n: b.n }).into()
        } else {
            p.weigh(|b| parcel::Weighed { n: b.n }).into()
        })
    }

    async fn weighed(
        &self,
        p: &parcel::Machine<parcel::Weighed>,
        cx: fsm_core::Context,
    ) -> Result<(Print, Print), fsm_core::StepError> {
        self.key("Weighed", &cx);
        let print = |what: &str| {
            let what = what.to_owned();
            print::Machine::new(print::Queued { n: p.n, what }).into()
        };
        Ok((print("sticker"), print("slip")))
    }

    fn join_weighed(
        &self,
        p: parcel::Machine<parcel::Weighed>,
        sticker: fsm_core::Ended<Print>,
        slip: fsm_core::Ended<Print>,
    ) -> parcel::Machine<parcel::Labelled> {
        let text = |e: fsm_core::Ended<Print>| match e.into_state() {
            Print::Printed { text } => text,
            other => panic!("{other:?}"),
        };
        let label = format!("{} + {}", text(sticker), text(slip));
        p.label(|_| parcel::Labelled { label })
    }
}

impl print::Steps for Packer {
    async fn queued(
        &self,
        p: print::Machine<print::Queued>,
        cx: fsm_core::Context,
    ) -> Result<print::Machine<print::Printed>, fsm_core::StepError> {
        self.key("Queued", &cx);
        let key = cx.idempotency_key().to_string();
        Ok(p.print(|q| print::Printed {
            text: format!("{} {} ({key})", q.what, q.n),
        }))
    }
}

/// Set in the adapter child process of the test below.
const SHIPMENT_ADAPTER: &str = "FSM_TEST_SHIPMENT_ADAPTER";

#[test]
fn shipment_adapter() {
    // The step adapter of `Shipment` (its branches' machines too), when the interpreter runs
    // this binary as one; else nothing.
    if std::env::var_os(SHIPMENT_ADAPTER).is_some() {
        serve_adapter::<Shipment, _>(&Packer::default());
    }
}

/// The exported shipment runs its Map of parcels, each parcel's Parallel state of prints, in
/// the interpreter as the executor runs them: the same end (the labels the joins built from
/// the branches' ends, with the branches' idempotency keys in them), every step with the key
/// the executor gave it; a lost parcel fails the Map, and the state's route for
/// `branch_failed` takes it to `Held`, as in the executor.
#[test]
fn the_exported_fan_outs_run_in_an_asl_interpreter_as_in_the_executor() {
    let export = Asl::new(Shipment::DEFINITION).to_value();
    let map = &export["States"]["Packing.branches"];
    assert_eq!(map["Type"], "Map");
    assert_eq!(map["MaxConcurrency"], 2);
    let nested = &map["ItemProcessor"]["States"]["Packing.item.Weighed.branches"];
    assert_eq!(nested["Type"], "Parallel");
    assert_eq!(
        nested["Branches"][1]["StartAt"],
        "Packing.item.Weighed.slip.branch.start"
    );
    let Some(dir) =
        interpreter("the_exported_fan_outs_run_in_an_asl_interpreter_as_in_the_executor")
    else {
        return;
    };
    let definition =
        std::env::temp_dir().join(format!("fsm-asl-shipment-{}.json", std::process::id()));
    std::fs::write(&definition, Asl::new(Shipment::DEFINITION).to_json_pretty()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let me = std::env::current_exe().unwrap();
    // SAFETY: set before the child processes start, read only by them.
    unsafe { std::env::set_var(SHIPMENT_ADAPTER, "1") };
    for (parcels, ends_in) in [(vec![1, 2, 3], "Shipped"), (vec![1, 13, 3], "Held")] {
        let start = Shipment::Packing {
            parcels: parcels.clone(),
        };
        let executor = fsm_core::Executor::<Shipment, _>::new(Packer::default());
        let outcome = rt.block_on(executor.run(start.clone()));
        assert_eq!(outcome.state.state_name(), ends_in, "{}", outcome.history);
        let input = start_input(&start, outcome.id);
        let report = interpret(
            &dir,
            &definition,
            &me,
            &["--exact", "shipment_adapter", "--nocapture", "--quiet"],
            &input,
        );
        let path = entered(&report);
        assert_eq!(path, ["Packing", ends_in], "{parcels:?}: {report}");
        if ends_in == "Held" {
            assert_eq!(report["status"], "failed");
            assert_eq!(report["error"], "fsm.Held");
            continue;
        }
        assert_eq!(report["status"], "succeeded", "{report}");
        assert_eq!(
            report["output"]["data"],
            serde_json::to_value(&outcome.state).unwrap()
        );
        // Every step, with its key: the same set in both (a join's Task runs its state's
        // step again, with the same key).
        let mut ours = executor.steps().0.lock().unwrap().clone();
        ours.sort();
        ours.dedup();
        let mut theirs: Vec<(String, String)> = report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let key = format!("{}-step-{}", t["execution"].as_str().unwrap(), t["step"]);
                (t["state"].as_str().unwrap().to_owned(), key)
            })
            .collect();
        theirs.sort();
        theirs.dedup();
        assert_eq!(
            theirs, ours,
            "{parcels:?}: keys, the interpreter's then ours"
        );
        // 1 shipment, 3 parcels of 2 steps, 6 prints.
        assert_eq!(ours.len(), 1 + 3 * 2 + 6);
    }
    let _ = std::fs::remove_file(&definition);
}
