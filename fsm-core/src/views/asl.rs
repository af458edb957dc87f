//! Export to Amazon States Language, so that the same machine runs on AWS Step Functions.

use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::runtime::driver::{Cloned, Cold, Deadline, Driver, Guard, Stop, Verdict};
use crate::runtime::fan_out::BranchData;
use crate::runtime::recorder::Recorder;
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
        json!({
            "Comment": format!("{} (exported by fsm-core; definition {})", def.name, def.fingerprint()),
            "StartAt": def.initial_state().name,
            "States": self.states(def, None, ""),
        })
    }

    /// The states of `def`'s machine: the exported machine's, or (`machine` its name) those
    /// of a machine one of its states runs as a branch, whose Tasks name it. Step Functions
    /// wants a state's name unique in the whole state machine, branches included: each is
    /// `prefix` and the machine's own (the Tasks' `task` parameters are the machine's own).
    fn states(&self, def: &Definition, machine: Option<&str>, prefix: &str) -> Map<String, Value> {
        let full = |name: &str| format!("{prefix}{name}");
        let mut states = Map::new();
        for (i, s) in def.states.iter().enumerate() {
            let name = s.name;
            match s.kind {
                StateKind::Success => {
                    states.insert(full(name), json!({ "Type": "Succeed" }));
                    continue;
                }
                StateKind::Failure => {
                    states.insert(
                        full(name),
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
                    // Only the envelope, and the Task's own name: the adapter runs the step
                    // of the state this Task is for, whatever else the input holds.
                    task.insert("Parameters".into(), envelope_parameters(name, machine));
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
                                "task": name,
                                "state.$": "$.state",
                                "data.$": "$.data",
                                "execution.$": "$.execution",
                                "step.$": "$.step",
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
                // Fatal errors are never retried: the first retrier matches, with no attempts,
                // `fsm.Fatal` (every fatal error whose kind this state does not route) and
                // the fatal name of each kind it routes.
                let mut fatal: Vec<String> = vec![FATAL.to_owned()];
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
                    let route = route_name(name, target);
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
                        "Next": full(&route),
                    }));
                    // The route's handler runs through the adapter too: it builds the
                    // target's data from the failed state's and the error.
                    let mut parameters = envelope_parameters(&route_name(name, target), machine);
                    parameters["error.$"] = "$.error".into();
                    states.insert(
                        full(&route),
                        json!({
                            "Type": "Task",
                            "Resource": (self.resource)(name),
                            "Parameters": parameters,
                            "Next": full(target),
                        }),
                    );
                }
                task.insert("Catch".into(), Value::Array(list));
            }
            // A fanning-out state: its Task (the step) hands out the branches, a Parallel or
            // Map state runs them, and the join's Task goes on to the next state.
            let mut name = name.to_owned();
            if let Some(fan) = s.fan_out {
                let branches = format!("{name}.branches");
                task.insert("Next".into(), full(&branches).into());
                states.insert(full(&name), Value::Object(task));
                let route = catches
                    .iter()
                    .find(|(_, kinds)| kinds.contains(&StepError::BRANCH_FAILED))
                    .or_else(|| catches.iter().find(|(_, kinds)| kinds.contains(&"*")))
                    .map(|(to, _)| full(&route_name(&name, def.states[*to].name)));
                self.fan_out(&mut states, &full(&name), fan, route);
                let join = format!("{name}.join");
                let mut parameters = envelope_parameters(&join, machine);
                parameters["ends.$"] = "$.ends".into();
                task = Map::new();
                task.insert("Type".into(), "Task".into());
                task.insert("Resource".into(), resource.into());
                task.insert("Parameters".into(), parameters);
                name = join;
            }
            let name = name.as_str();
            if targets.len() == 1 {
                task.insert("Next".into(), full(targets[0]).into());
            } else {
                // The step's output names the state it chose: a Choice follows it.
                let choose = format!("{name}.next");
                let unexpected = format!("{name}.unexpected");
                task.insert("Next".into(), full(&choose).into());
                let choices: Vec<Value> = targets
                    .iter()
                    .map(|t| json!({ "Variable": "$.state", "StringEquals": t, "Next": full(t) }))
                    .collect();
                states.insert(
                    full(&choose),
                    json!({ "Type": "Choice", "Choices": choices, "Default": full(&unexpected) }),
                );
                states.insert(
                    full(&unexpected),
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
            states.insert(full(name), Value::Object(task));
        }
        states
    }

    /// The Parallel or Map state `<state>.branches` that runs `fan`'s branches from the
    /// envelopes the state's Task handed out (`$.branches`), gathering their ends in
    /// `$.ends` for the join; a failed branch goes to `route` (the state's route for
    /// `branch_failed`) as an error of that kind, if the state routes it. `state` is the
    /// state's full name; its branches' states are named `<state>.<branch>.<State>` (a
    /// Map's, `<state>.item.<State>`).
    fn fan_out(
        &self,
        states: &mut Map<String, Value>,
        state: &str,
        fan: &crate::FanOut,
        route: Option<String>,
    ) {
        let join = format!("{state}.join");
        let mut runner = match fan.kind {
            crate::FanOutKind::Parallel => {
                let branches: Vec<Value> = fan
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        let def = b.definition;
                        let prefix = format!("{state}.{}.", b.name);
                        let mut inner = self.states(def, Some(def.name), &prefix);
                        // Each branch picks its own envelope out of the state's.
                        let start = format!("{prefix}{BRANCH_START}");
                        inner.insert(
                            start.clone(),
                            json!({
                                "Type": "Pass",
                                "InputPath": format!("$.branches[{j}]"),
                                "Next": format!("{prefix}{}", def.initial_state().name),
                            }),
                        );
                        json!({ "StartAt": start, "States": inner })
                    })
                    .collect();
                json!({ "Type": "Parallel", "Branches": branches })
            }
            crate::FanOutKind::Map {
                max_concurrency, ..
            } => {
                let Some(item) = fan.branches.first() else {
                    return;
                };
                let def = item.definition;
                let prefix = format!("{state}.item.");
                json!({
                    "Type": "Map",
                    "ItemsPath": "$.branches",
                    "MaxConcurrency": max_concurrency,
                    "ItemProcessor": {
                        "ProcessorConfig": { "Mode": "INLINE" },
                        "StartAt": format!("{prefix}{}", def.initial_state().name),
                        "States": self.states(def, Some(def.name), &prefix),
                    },
                })
            }
        };
        runner["ResultPath"] = "$.ends".into();
        runner["Next"] = join.into();
        if let Some(route) = route {
            // Whatever a branch failed with, the state fails with `branch_failed`, as in the
            // executor: a Pass names the error so before the route's Task.
            let failed = format!("{state}.branch_failed");
            runner["Catch"] = json!([{
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.error",
                "Next": failed,
            }]);
            states.insert(
                failed,
                json!({
                    "Type": "Pass",
                    "Parameters": {
                        "Error": fatal_error_name(StepError::BRANCH_FAILED),
                        "Cause.$": "$.error.Cause",
                    },
                    "ResultPath": "$.error",
                    "Next": route,
                }),
            );
        }
        states.insert(format!("{state}.branches"), runner);
    }

    /// The state machine as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_value()).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The error name of every fatal error whose kind the failing state has no catch route for
/// (its cause is `<kind>: <message>`). ASL matches error names exactly, so one name for them
/// all is what lets the first retrier of every state refuse to retry any fatal error, as the
/// executor does.
pub const FATAL: &str = "fsm.Fatal";

/// The name of the Task that runs the route of `state`'s errors to `target`.
fn route_name(state: &str, target: &str) -> String {
    format!("{state}.catch.{target}")
}

/// The first state of a Parallel state's branch: a Pass that picks the branch's envelope.
const BRANCH_START: &str = "branch.start";

/// The Parameters of a Task that runs a step: the envelope, and the Task's own name (and
/// the machine's, a branch's Task).
fn envelope_parameters(task: &str, machine: Option<&str>) -> Value {
    let mut parameters = json!({
        "task": task,
        "state.$": "$.state",
        "data.$": "$.data",
        "execution.$": "$.execution",
        "step.$": "$.step",
    });
    if let Some(machine) = machine {
        parameters["machine"] = machine.into();
    }
    parameters
}

/// Whole seconds, rounded up, at least 1: ASL counts timeouts and intervals in seconds.
fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// What a Task's input holds: the Task's own name, the state (its data, checked against its
/// name), the execution and the step.
struct Envelope<'i, M> {
    task: &'i str,
    state: M,
    execution: ExecutionId,
    step: u32,
}

impl<'i, M: crate::Fsm + BranchData> Envelope<'i, M> {
    /// The envelope in `input`, or why it is not one: every field is required, as the
    /// export passes them, so that no Task runs another state's step and no two executions
    /// share idempotency keys.
    fn read(input: &'i Value) -> Result<Self, TaskFailure> {
        let def = M::DEFINITION;
        let text = |key: &str| {
            input
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| TaskFailure::input(format!("the input has no `{key}` (a string)")))
        };
        let task = text("task")?;
        let name = text("state")?;
        let data = input
            .get("data")
            .ok_or_else(|| TaskFailure::input("the input has no `data`"))?;
        let state = M::from_json(&data.to_string())
            .map_err(|e| TaskFailure::input(format!("`data` is not a `{}`: {e}", def.name)))?;
        if state.state_name() != name {
            return Err(TaskFailure::input(format!(
                "`state` says `{name}` but `data` is `{}`",
                state.state_name()
            )));
        }
        let execution = text("execution")?
            .parse::<ExecutionId>()
            .map_err(|_| TaskFailure::input("`execution` is not an execution id (a UUID)"))?;
        let step = input
            .get("step")
            .and_then(Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| {
                TaskFailure::input("the input has no `step` (a whole number below 2^32)")
            })?;
        Ok(Envelope {
            task,
            state,
            execution,
            step,
        })
    }
}

/// The envelope of `next` at `step` of `execution`: a Task's output.
fn envelope_of<M: crate::Fsm + BranchData>(
    next: &M,
    execution: ExecutionId,
    step: u32,
) -> Result<Value, TaskFailure> {
    let data = next
        .to_json()
        .and_then(|json| serde_json::from_str::<Value>(&json))
        .map_err(|e| TaskFailure {
            error: "fsm.Serialize".into(),
            cause: e.to_string(),
        })?;
    Ok(json!({
        "state": next.state_name(),
        "data": data,
        "step": step,
        "execution": execution.to_string(),
    }))
}

/// What the step adapter asks of the fan-out of the state it runs: its Parallel and Map
/// states' branches run as Step Functions states, between the state's Task (its step, which
/// hands out the branches' starting envelopes) and its join's Task (which receives their
/// ends).
pub(crate) enum AslFanOut {
    /// The state's Task: hand out the branches' starting envelopes.
    Start,
    /// What the fan-out handed out (or why it could not).
    Started(Result<Vec<Value>, StepError>),
    /// The join's Task: the branches' ends, in order, as the Parallel or Map state
    /// gathered them.
    Join(Vec<Value>),
}

/// What the adapter asked of the fan-out under way, taken.
pub(crate) fn fan_out_mode<M>(driver: &mut Driver<'_, M>) -> Option<AslFanOut> {
    let slot = driver.cold.as_ref()?.asl?;
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Keeps what the fan-out handed out for the adapter; the error that stops the state's
/// step there.
pub(crate) fn started<M: crate::Fsm>(
    driver: &mut Driver<'_, M>,
    starts: Result<Vec<Value>, StepError>,
) -> StepError {
    let error = match &starts {
        Ok(_) => StepError::fatal(
            "fan_out_started",
            "the branches run as Step Functions states",
        ),
        Err(e) => e.clone(),
    };
    if let Some(slot) = driver.cold.as_ref().and_then(|c| c.asl) {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(AslFanOut::Started(starts));
    }
    error
}

/// The starting envelope of branch `position` of the fan-out at `step` of `parent`: its
/// machine, its state, and its own execution and steps (as the executor numbers them).
pub(crate) fn branch_start<B: crate::Fsm + BranchData>(
    parent: ExecutionId,
    step: u32,
    position: u32,
    start: &B,
) -> Result<Value, StepError> {
    let data = start
        .to_json()
        .and_then(|json| serde_json::from_str::<Value>(&json))
        .map_err(|e| StepError::fatal("serialize", e.to_string()))?;
    Ok(json!({
        "machine": B::DEFINITION.name,
        "state": start.state_name(),
        "data": data,
        "execution": parent.branch(step, position).to_string(),
        "step": 0,
    }))
}

/// The end of branch `position` of the fan-out at `step` of `parent`, from the envelope its
/// last state answered: of that branch's execution, in a success state of its machine.
pub(crate) fn branch_end<B: crate::Fsm + BranchData>(
    parent: ExecutionId,
    step: u32,
    position: u32,
    end: Option<&Value>,
) -> Result<crate::Ended<B>, StepError> {
    let bad = |what: String| StepError::fatal("bad_input", format!("branch {position}: {what}"));
    let end = end.ok_or_else(|| bad("no end in `ends`".into()))?;
    let id = parent.branch(step, position);
    if end.get("execution").and_then(Value::as_str) != Some(&id.to_string()) {
        return Err(bad(format!("the end is not of execution {id}")));
    }
    let data = end
        .get("data")
        .ok_or_else(|| bad("the end has no `data`".into()))?;
    let state = B::from_json(&data.to_string())
        .map_err(|e| bad(format!("`data` is not a `{}`: {e}", B::DEFINITION.name)))?;
    if B::DEFINITION.states[state.state_index()].kind != StateKind::Success {
        let message = format!(
            "branch {position} (execution {id}) ended in `{}`",
            state.state_name()
        );
        return Err(StepError::fatal(StepError::BRANCH_FAILED, message));
    }
    Ok(crate::Ended::new(id, position, state))
}

/// The answer to a waiting state's Task (what `SendTaskSuccess` sends with the token): the
/// envelope of `next`, one of the waiting state's next states, at the step after the wait's,
/// as the executor counts it. `payload` is the `Payload` the exported Task handed out.
pub fn wait_answer<M: crate::Fsm + Serialize + DeserializeOwned>(
    payload: &Value,
    next: M,
) -> Result<Value, TaskFailure> {
    let def = M::DEFINITION;
    let waiting = Envelope::<M>::read(payload)?;
    let from = waiting.state.state_index();
    if def.states[from].wait.is_none() {
        return Err(TaskFailure::input(format!(
            "`{}` is not a waiting state",
            waiting.state.state_name()
        )));
    }
    if waiting.task != waiting.state.state_name() {
        return Err(TaskFailure::input(format!(
            "the Task `{}` does not wait in `{}`",
            waiting.task,
            waiting.state.state_name()
        )));
    }
    let to = next.state_index();
    if !def.transitions_from(from).any(|t| !t.catch && t.to == to) {
        return Err(TaskFailure::input(format!(
            "`{}` is not a next state of `{}`",
            next.state_name(),
            waiting.state.state_name()
        )));
    }
    envelope_of(&next, waiting.execution, waiting.step.saturating_add(1))
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
    /// The failure a step's `error` is to Step Functions, in a state that routes the error
    /// kinds `routed`: a retryable error is named by its kind; a fatal one by its kind with
    /// `.fatal` when the state routes that kind, else [`FATAL`] with the kind in the cause.
    fn of(error: &StepError, routed: &[&str]) -> Self {
        let kind = error.kind();
        if error.is_retryable() {
            TaskFailure {
                error: kind.to_owned(),
                cause: error.message().to_owned(),
            }
        } else if routed.contains(&kind) {
            TaskFailure {
                error: fatal_error_name(kind),
                cause: error.message().to_owned(),
            }
        } else {
            TaskFailure {
                error: FATAL.to_owned(),
                cause: format!("{kind}: {}", error.message()),
            }
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
/// `steps` (or, for an error route's Task, the route's handler) on the Task's input
/// (`{"task": "<Task>", "state": "<State>", "data": <enum>, "execution": "<id>", "step": n}`,
/// as the export's `Parameters` pass it, with `error` on a route's Task), and answers the
/// envelope of the next state, or the failure Step Functions retries and routes by its name
/// (see [`TaskFailure`] and [`FATAL`]).
///
/// Every field is required and checked: the Task runs only the state it is for (`task` is
/// `<State>`, or `<State>.catch.<Target>` for a route), `data` must be that state, and a
/// missing or malformed `execution` (a UUID) or `step` is a [`TaskFailure`] named
/// `fsm.BadInput`, never a default that another execution shares. The step gets a
/// [`Context`](crate::Context) of that execution and step, so its idempotency key is the
/// executor's; the answer counts the step up (a route counts as a step, as in the
/// executor). Retries are Step Functions' own, so the attempt is always 1. A waiting state's
/// step is not run here (Step Functions hands its own token to the function named in the
/// export); [`wait_answer`] builds the answer to its token.
///
/// The future is `Send`, so it can be spawned (`tokio::spawn(async move { run_task(..).await
/// })`).
pub fn run_task<'a, M, H>(
    steps: &'a H,
    input: &'a Value,
) -> impl core::future::Future<Output = Result<Value, TaskFailure>> + Send + 'a
where
    M: Dispatch<H> + Clone + Serialize + DeserializeOwned,
    H: Send + Sync + 'static,
{
    run_task_inner::<M, H>(steps, input)
}

pub(crate) async fn run_task_inner<M, H>(steps: &H, input: &Value) -> Result<Value, TaskFailure>
where
    M: Dispatch<H> + Clone + BranchData,
    H: Send + Sync + 'static,
{
    let def = M::DEFINITION;
    // A Task of a branch's machine (a Parallel or Map state's): that machine's adapter.
    if let Some(machine) = input.get("machine").and_then(Value::as_str) {
        if machine != def.name {
            let Some(task) = M::branch_task(machine) else {
                return Err(TaskFailure::input(format!(
                    "`{machine}` is not a machine that `{}` runs as a branch",
                    def.name
                )));
            };
            return task(steps, input).await;
        }
    }
    let envelope_in = Envelope::<M>::read(input)?;
    let Envelope {
        task,
        state,
        execution,
        step,
    } = envelope_in;
    let name = state.state_name();
    let envelope = |next: &M, step: u32| envelope_of(next, execution, step);
    // The Task says which state it is for: an error route's Task (`<State>.catch.<Target>`)
    // runs that route's handler, any other Task its state's step, and only for that state.
    let route = task.split_once(".catch.");
    let fan_out = crate::runtime::fan_out::fans_out(&state);
    // A fanning-out state's join (`<State>.join`): the branches' ends are in `ends`.
    let join = task.strip_suffix(".join").filter(|_| fan_out);
    let for_state = join.unwrap_or_else(|| route.map_or(task, |(from, _)| from));
    if for_state != name {
        return Err(TaskFailure::input(format!(
            "the Task `{task}` runs `{for_state}`, not `{name}`"
        )));
    }
    if let Some((_, target)) = route {
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
            None if error_name == FATAL => match cause.split_once(": ") {
                Some((kind, message)) => StepError::fatal(kind.to_owned(), message),
                None => StepError::fatal(FATAL, cause),
            },
            None if error_name == "States.Timeout" => {
                StepError::retryable(StepError::TIMEOUT, cause)
            }
            None => StepError::retryable(error_name.to_owned(), cause),
        };
        return match state.recover(steps, &error) {
            Ok((next, _)) => {
                if next.state_name() != target {
                    return Err(TaskFailure::input(format!(
                        "the route of `{name}` to `{target}` does not take an error named \
                         `{error_name}`"
                    )));
                }
                // The route is a step of the execution, as the executor counts it.
                envelope(&next, step.saturating_add(1))
            }
            Err(_) => Err(TaskFailure::input(format!(
                "`{name}` has no route for an error named `{error_name}`"
            ))),
        };
    }
    let routed: Vec<&str> = def
        .transitions_from(state.state_index())
        .filter(|t| t.catch && t.event != "*")
        .map(|t| t.event)
        .collect();
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
    // What the step asks of the state's fan-out, and what it hands out.
    let fan_out_slot = std::sync::Mutex::new(None);
    // One step: the driver pauses before the next, as a durable executor's does.
    let deadline = Deadline::new(false);
    let cold = Cold {
        asl: Some(&fan_out_slot),
        ..Cold::default()
    };
    let rec = Recorder::inactive();
    let mut driver = Driver::stepwise(execution, (step, 1), &[], cold, rec, &deadline);
    if fan_out {
        let mode = match join {
            Some(_) => {
                let ends = input.get("ends").and_then(Value::as_array).ok_or_else(|| {
                    TaskFailure::input("the join's input has no `ends` (an array)")
                })?;
                AslFanOut::Join(ends.clone())
            }
            None => AslFanOut::Start,
        };
        *fan_out_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(mode);
    }
    let stop = Guard::new(state.run::<Cloned>(steps, &mut driver), &deadline).await;
    let verdict = deadline.take_verdict();
    let next_step = driver.step;
    // The branches' starting envelopes, if the step handed them out (a failure to build
    // them is the step's error).
    let branches = match fan_out_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        Some(AslFanOut::Started(Ok(branches))) => Some(branches),
        _ => None,
    };
    match (stop, driver.kept.take()) {
        // The state's step ran and handed out its branches: the state's envelope, with
        // theirs for the Parallel or Map state that follows.
        (Stop::Done(Err(_)), Some(fanning)) if branches.is_some() => {
            let mut out = envelope(&fanning, next_step)?;
            out["branches"] = Value::Array(branches.unwrap_or_default());
            Ok(out)
        }
        (Stop::Done(Ok(end)), _) => envelope(&end, next_step),
        (Stop::Done(Err(_)), Some(next)) if verdict == Verdict::Halted && driver.take_paused() => {
            envelope(&next, next_step)
        }
        (Stop::Done(Err(error)), _) => Err(TaskFailure::of(&error, &routed)),
        (Stop::Panicked(payload), _) => Err(TaskFailure::of(
            &StepError::fatal(
                StepError::PANIC,
                format!(
                    "step panicked: {}",
                    crate::runtime::driver::panic_text(&*payload)
                ),
            ),
            &routed,
        )),
        (Stop::TimedOut, _) => Err(TaskFailure::of(
            &StepError::retryable(StepError::TIMEOUT, "the step ran past its time limit"),
            &routed,
        )),
    }
}
