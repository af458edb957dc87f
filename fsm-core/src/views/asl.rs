//! Export to Amazon States Language, so that the same machine runs on AWS Step Functions.

use core::time::Duration;

use serde_json::{json, Map, Value};

use crate::{Definition, StateKind};

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
