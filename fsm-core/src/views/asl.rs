//! Export to Amazon States Language, so that the same machine runs on AWS Step Functions.

use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::driver::{Cloned, Cold, Deadline, Driver, Guard, Stop, Verdict};
use crate::executor::Recorder;
use crate::{Definition, Dispatch, ExecutionId, StateKind, StepError};

/// A machine's definition as an Amazon States Language state machine.
///
/// Every state with a step becomes a `Task` whose resource runs that step (see
/// [`Asl::resource`]); the data that flows between states is an envelope,
/// `{"state": "<State>", "data": <the machine's enum as serde JSON>}`, which the step adapter
/// reads and writes. The README's "Export to Amazon States Language" lists every mapping.
///
/// ```
/// use fsm_core::{Fsm, views::Asl};
///
/// #[derive(Fsm)]
/// enum Door {
///     #[fsm(initial, on(open => Open), retry(max_attempts = 2, interval_ms = 1500))]
///     Closed,
///     #[fsm(terminal)]
///     Open,
/// }
///
/// fn main() {
///     let asl = Asl::new(Door::DEFINITION).to_value();
///     assert_eq!(asl["StartAt"], "Closed");
///     assert_eq!(asl["States"]["Closed"]["Type"], "Task");
///     assert_eq!(asl["States"]["Closed"]["Next"], "Open");
///     assert_eq!(asl["States"]["Closed"]["Retry"][1]["IntervalSeconds"], 2); // 1.5 s, up
///     assert_eq!(asl["States"]["Open"]["Type"], "Succeed");
/// }
/// ```
pub struct Asl<'a> {
    def: &'a Definition,
    resource: Box<dyn Fn(&str) -> String + 'a>,
}

impl core::fmt::Debug for Asl<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Asl")
            .field("machine", &self.def.name)
            .finish_non_exhaustive()
    }
}

/// The error name of a step's fatal error of kind `kind` (a retryable error is named by its
/// kind alone): ASL retries by error name, and this is how the export tells the two apart.
pub fn fatal_error_name(kind: &str) -> String {
    format!("{kind}.fatal")
}

impl<'a> Asl<'a> {
    /// The export of `def`, every step's resource the default: the Lambda function
    /// `arn:aws:lambda:us-east-1:000000000000:function:<Machine>Steps`, one function (the step
    /// adapter) for every state, since the envelope names the state.
    pub fn new(def: &'a Definition) -> Self {
        let name = def.name;
        Asl {
            def,
            resource: Box::new(move |_| {
                format!("arn:aws:lambda:us-east-1:000000000000:function:{name}Steps")
            }),
        }
    }

    /// Gives state `state`'s Task (and its error routes' Tasks) the resource
    /// `resource(state)`: a Lambda function's ARN, or any Task resource.
    pub fn resource(mut self, resource: impl Fn(&str) -> String + 'a) -> Self {
        self.resource = Box::new(resource);
        self
    }

    /// The state machine, as JSON.
    pub fn to_value(&self) -> Value {
        let def = self.def;
        let mut states = Map::new();
        for (i, s) in def.states.iter().enumerate() {
            let name = s.name;
            match s.kind {
                StateKind::Success => {
                    states.insert(name.into(), json!({ "Type": "Succeed" }));
                    continue;
                }
                StateKind::Failure => {
                    states.insert(
                        name.into(),
                        json!({
                            "Type": "Fail",
                            "Error": format!("fsm.{name}"),
                            "Cause": format!("the execution ended in the failure state `{name}`"),
                        }),
                    );
                    continue;
                }
                StateKind::Step => {}
            }
            let targets: Vec<&str> = def
                .transitions_from(i)
                .filter(|t| !t.catch)
                .map(|t| def.states[t.to].name)
                .collect();
            let mut task = Map::new();
            task.insert("Type".into(), "Task".into());
            let resource = (self.resource)(name);
            match s.wait {
                None => {
                    task.insert("Resource".into(), resource.clone().into());
                }
                Some(wait) => {
                    task.insert(
                        "Resource".into(),
                        "arn:aws:states:::lambda:invoke.waitForTaskToken".into(),
                    );
                    task.insert(
                        "Parameters".into(),
                        json!({
                            "FunctionName": resource,
                            "Payload": {
                                "state.$": "$.state",
                                "data.$": "$.data",
                                "token.$": "$$.Task.Token",
                            },
                        }),
                    );
                    if let Some(t) = wait.timeout {
                        task.insert("TimeoutSeconds".into(), seconds(t).into());
                    }
                }
            }
            if let (Some(t), None) = (s.timeout, s.wait) {
                task.insert("TimeoutSeconds".into(), seconds(t).into());
            }
            let catches: Vec<(usize, Vec<&str>)> = {
                let mut routes: Vec<(usize, Vec<&str>)> = Vec::new();
                for t in def.transitions_from(i).filter(|t| t.catch) {
                    match routes.iter_mut().find(|(to, _)| *to == t.to) {
                        Some((_, kinds)) => kinds.push(t.event),
                        None => routes.push((t.to, vec![t.event])),
                    }
                }
                routes
            };
            if let Some(r) = s.retry.filter(|r| r.max_attempts > 0) {
                // Fatal errors are not retried: the first retrier matches every fatal name
                // the state routes, and `panic`'s, with no attempts.
                let mut fatal: Vec<String> = vec![fatal_error_name(crate::StepError::PANIC)];
                for (_, kinds) in &catches {
                    for k in kinds.iter().filter(|k| **k != "*") {
                        let name = fatal_error_name(k);
                        if !fatal.contains(&name) {
                            fatal.push(name);
                        }
                    }
                }
                let mut retrier = json!({
                    "ErrorEquals": ["States.ALL"],
                    "IntervalSeconds": seconds(r.interval),
                    "MaxAttempts": r.max_attempts,
                    "BackoffRate": r.backoff_rate,
                    "JitterStrategy": match r.jitter {
                        crate::Jitter::Full => "FULL",
                        crate::Jitter::None => "NONE",
                    },
                });
                if let Some(max) = r.max_delay {
                    retrier["MaxDelaySeconds"] = seconds(max).into();
                }
                task.insert(
                    "Retry".into(),
                    json!([{ "ErrorEquals": fatal, "MaxAttempts": 0 }, retrier]),
                );
            }
            if !catches.is_empty() {
                let mut list = Vec::new();
                // `States.ALL` must come last.
                let mut ordered: Vec<&(usize, Vec<&str>)> =
                    catches.iter().filter(|(_, k)| !k.contains(&"*")).collect();
                ordered.extend(catches.iter().filter(|(_, k)| k.contains(&"*")));
                for (to, kinds) in ordered {
                    let target = def.states[*to].name;
                    let route = format!("{name}.catch.{target}");
                    let mut names: Vec<String> = Vec::new();
                    for k in kinds {
                        match *k {
                            "*" => names = vec!["States.ALL".to_owned()],
                            crate::StepError::TIMEOUT => {
                                names.push("States.Timeout".into());
                                names.push(k.to_string());
                                names.push(fatal_error_name(k));
                            }
                            _ => {
                                names.push(k.to_string());
                                names.push(fatal_error_name(k));
                            }
                        }
                        if names.first().is_some_and(|n| n == "States.ALL") {
                            break;
                        }
                    }
                    list.push(json!({
                        "ErrorEquals": names,
                        "ResultPath": "$.error",
                        "Next": route,
                    }));
                    // The route's handler runs through the adapter too: it builds the
                    // target's data from the failed state's and the error.
                    states.insert(
                        route,
                        json!({
                            "Type": "Task",
                            "Resource": (self.resource)(name),
                            "Parameters": {
                                "route": format!("{name}->{target}"),
                                "state.$": "$.state",
                                "data.$": "$.data",
                                "error.$": "$.error",
                            },
                            "Next": target,
                        }),
                    );
                }
                task.insert("Catch".into(), Value::Array(list));
            }
            if targets.len() == 1 {
                task.insert("Next".into(), targets[0].into());
            } else {
                // The step's output names the state it chose: a Choice follows it.
                let choose = format!("{name}.next");
                let unexpected = format!("{name}.unexpected");
                task.insert("Next".into(), choose.clone().into());
                let choices: Vec<Value> = targets
                    .iter()
                    .map(|t| json!({ "Variable": "$.state", "StringEquals": t, "Next": t }))
                    .collect();
                states.insert(
                    choose,
                    json!({ "Type": "Choice", "Choices": choices, "Default": unexpected }),
                );
                states.insert(
                    unexpected,
                    json!({
                        "Type": "Fail",
                        "Error": "fsm.UnexpectedNext",
                        "Cause": format!(
                            "the step of `{name}` answered a state that is not one of {}",
                            targets.join(", ")
                        ),
                    }),
                );
            }
            states.insert(name.into(), Value::Object(task));
        }
        json!({
            "Comment": format!("{} (exported by fsm-core; definition {})", def.name, def.fingerprint()),
            "StartAt": def.initial_state().name,
            "States": states,
        })
    }

    /// The state machine as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_value()).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Whole seconds, rounded up, at least 1: ASL counts timeouts and intervals in seconds.
fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// Why a Task failed, as Step Functions names it: `error` is the step's error kind (with
/// `.fatal` appended when it is not retryable, see [`fatal_error_name`]), `cause` its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The ASL error name.
    pub error: String,
    /// The ASL cause.
    pub cause: String,
}

impl TaskFailure {
    fn of(error: &StepError) -> Self {
        TaskFailure {
            error: if error.is_retryable() {
                error.kind().to_owned()
            } else {
                fatal_error_name(error.kind())
            },
            cause: error.message().to_owned(),
        }
    }

    fn input(cause: impl Into<String>) -> Self {
        TaskFailure {
            error: "fsm.BadInput".into(),
            cause: cause.into(),
        }
    }
}

impl core::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}

impl std::error::Error for TaskFailure {}

/// The step adapter: what the function behind an exported Task does. It runs one step of
/// `steps` (or, for an error route's Task, the route's handler) on the envelope `input`
/// (`{"state": "<State>", "data": <enum>, "step": n, "execution": "<id>"}`, the last two
/// optional), and answers the envelope of the next state, or the failure Step Functions
/// retries and routes by its name.
///
/// The step gets a [`Context`](crate::Context) whose execution is `execution` (a UUID; 0 when
/// absent) and whose step number is `step`, which the answer counts up: pass both in the
/// execution's input, and the idempotency keys are those the executor would give. Retries
/// are Step Functions' own, so the attempt is always 1. A waiting state's step is not run
/// here (Step Functions hands its own token to the function named in the export).
pub async fn run_task<M, H>(steps: &H, input: &Value) -> Result<Value, TaskFailure>
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
{
    let def = M::DEFINITION;
    let name = input
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| TaskFailure::input("the input has no `state`"))?;
    let data = input
        .get("data")
        .ok_or_else(|| TaskFailure::input("the input has no `data`"))?;
    let state: M = serde_json::from_value(data.clone())
        .map_err(|e| TaskFailure::input(format!("`data` is not a `{}`: {e}", def.name)))?;
    if state.state_name() != name {
        return Err(TaskFailure::input(format!(
            "`state` says `{name}` but `data` is `{}`",
            state.state_name()
        )));
    }
    let step = input
        .get("step")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or(0);
    let execution = input
        .get("execution")
        .and_then(Value::as_str)
        .and_then(|e| e.parse::<ExecutionId>().ok())
        .unwrap_or(ExecutionId::from_u128(0));
    let envelope = |next: &M, step: u32| -> Result<Value, TaskFailure> {
        Ok(json!({
            "state": next.state_name(),
            "data": serde_json::to_value(next).map_err(|e| TaskFailure {
                error: "fsm.Serialize".into(),
                cause: e.to_string(),
            })?,
            "step": step,
            "execution": execution.to_string(),
        }))
    };
    if let Some(route) = input.get("route").and_then(Value::as_str) {
        // An error route: the error as Step Functions caught it.
        let caught = input.get("error");
        let error_name = caught
            .and_then(|e| e.get("Error"))
            .and_then(Value::as_str)
            .unwrap_or("States.ALL");
        let cause = caught
            .and_then(|e| e.get("Cause"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let error = match error_name.strip_suffix(".fatal") {
            Some(kind) => StepError::fatal(kind.to_owned(), cause),
            None if error_name == "States.Timeout" => {
                StepError::retryable(StepError::TIMEOUT, cause)
            }
            None => StepError::retryable(error_name.to_owned(), cause),
        };
        return match state.recover(steps, &error) {
            Ok((next, _)) => {
                let target = route.split("->").nth(1).unwrap_or_default();
                if next.state_name() != target {
                    return Err(TaskFailure::input(format!(
                        "route `{route}` does not take an error named `{error_name}`"
                    )));
                }
                envelope(&next, step.saturating_add(1))
            }
            Err(_) => Err(TaskFailure::input(format!(
                "`{name}` has no route for an error named `{error_name}`"
            ))),
        };
    }
    let index = state.state_index();
    if def.states[index].kind.is_terminal() {
        return Err(TaskFailure::input(format!(
            "`{name}` is terminal: it has no step"
        )));
    }
    if def.states[index].wait.is_some() {
        return Err(TaskFailure {
            error: "fsm.WaitNotRun".into(),
            cause: format!("`{name}` waits for a task token: its step is not run by the adapter"),
        });
    }
    // One step: the driver pauses before the next, as a durable executor's does.
    let deadline = Deadline::new(false);
    let mut driver = Driver {
        kept: None,
        id: execution,
        step,
        watched: true,
        copying: false,
        checks: 0,
        index: 0,
        attempt: 1,
        policies: &[],
        cold: Some(Box::new(Cold {
            pause: true,
            ..Cold::default()
        })),
        waits: None,
        rec: Recorder::inactive(),
        deadline: &deadline,
    };
    let stop = Guard::new(state.run::<Cloned>(steps, &mut driver), &deadline).await;
    let verdict = deadline.take_verdict();
    let next_step = driver.step;
    match (stop, driver.kept.take()) {
        (Stop::Done(Ok(end)), _) => envelope(&end, next_step),
        (Stop::Done(Err(_)), Some(next)) if verdict == Verdict::Halted && driver.take_paused() => {
            envelope(&next, next_step)
        }
        (Stop::Done(Err(error)), _) => Err(TaskFailure::of(&error)),
        (Stop::Panicked(payload), _) => Err(TaskFailure::of(&StepError::fatal(
            StepError::PANIC,
            format!("step panicked: {}", crate::driver::panic_text(&*payload)),
        ))),
        (Stop::TimedOut, _) => Err(TaskFailure::of(&StepError::retryable(
            StepError::TIMEOUT,
            "the step ran past its time limit",
        ))),
    }
}
