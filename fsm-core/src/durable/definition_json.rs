//! A machine's definition as JSON and back: what a worker registers in its store
//! ([`Store::register`](crate::Store::register)) so that tools without the machine's code (the
//! `fsm` command line, the console) can draw its executions and check answers to its waits.

use core::time::Duration;

use serde_json::{json, Value};

use crate::{
    Branch, Definition, FanOut, FanOutKind, Jitter, RetryPolicy, StateInfo, StateKind, Transition,
    WaitPolicy,
};

fn kind_name(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Step => "step",
        StateKind::Success => "success",
        StateKind::Failure => "failure",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Definition {
    /// The definition as JSON: its name, states (name, kind, retry, timeout, wait, fan-out
    /// with the branches' definitions), initial state and transitions.
    /// [`Definition::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        self.json_value().to_string()
    }

    fn json_value(&self) -> Value {
        let states: Vec<Value> = self
            .states
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "kind": kind_name(s.kind),
                    "retry": s.retry.map(|r| json!({
                        "max_attempts": r.max_attempts,
                        "interval_ms": ms(r.interval),
                        "backoff_rate": r.backoff_rate,
                        "max_delay_ms": r.max_delay.map(ms),
                        "jitter": matches!(r.jitter, Jitter::Full),
                    })),
                    "timeout_ms": s.timeout.map(ms),
                    "wait": s.wait.map(|w| json!({ "timeout_ms": w.timeout.map(ms) })),
                    "fan_out": s.fan_out.map(fan_out_value),
                })
            })
            .collect();
        let transitions: Vec<Value> = self
            .transitions
            .iter()
            .map(|t| json!({ "from": t.from, "event": t.event, "to": t.to, "catch": t.catch }))
            .collect();
        json!({
            "name": self.name,
            "initial": self.initial,
            "states": states,
            "transitions": transitions,
        })
    }

    /// Reads a definition written by [`Definition::to_json`], checking that every index is
    /// in range. Its names are leaked to give it the `'static` life every definition has: for
    /// a process that reads a bounded number of definitions (the command line, a console that
    /// keeps each one it read), not one per request.
    pub fn from_json(text: &str) -> Result<&'static Definition, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        Definition::from_value(&v, 0)
    }

    /// Reads the definition `v`, a branch `depth` fan-outs down.
    fn from_value(v: &Value, depth: usize) -> Result<&'static Definition, String> {
        if depth > 16 {
            return Err("fan-outs nested more than 16 deep".into());
        }
        let text = |v: &Value, key: &str| -> Result<&'static str, String> {
            v.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| &*Box::leak(s.to_owned().into_boxed_str()))
                .ok_or_else(|| format!("no `{key}`"))
        };
        let index = |v: &Value, key: &str, len: usize| -> Result<usize, String> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|i| i as usize)
                .filter(|&i| i < len)
                .ok_or_else(|| format!("`{key}` is not an index below {len}"))
        };
        let duration = |v: Option<&Value>| -> Result<Option<Duration>, String> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .map(Some)
                    .ok_or_else(|| format!("{v} is not a duration in milliseconds")),
            }
        };
        let name = text(v, "name")?;
        let mut states = Vec::new();
        for s in v
            .get("states")
            .and_then(Value::as_array)
            .ok_or("no `states`")?
        {
            let kind = match s.get("kind").and_then(Value::as_str) {
                Some("step") => StateKind::Step,
                Some("success") => StateKind::Success,
                Some("failure") => StateKind::Failure,
                other => return Err(format!("a state's kind is {other:?}")),
            };
            let retry = match s.get("retry") {
                None | Some(Value::Null) => None,
                Some(r) => Some(RetryPolicy {
                    max_attempts: r
                        .get("max_attempts")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("a retry has no `max_attempts`")?,
                    interval: duration(r.get("interval_ms"))?.unwrap_or_default(),
                    backoff_rate: r.get("backoff_rate").and_then(Value::as_f64).unwrap_or(1.0),
                    max_delay: duration(r.get("max_delay_ms"))?,
                    jitter: if r.get("jitter").and_then(Value::as_bool) == Some(true) {
                        Jitter::Full
                    } else {
                        Jitter::None
                    },
                }),
            };
            let wait = match s.get("wait") {
                None | Some(Value::Null) => None,
                Some(w) => Some(WaitPolicy {
                    timeout: duration(w.get("timeout_ms"))?,
                }),
            };
            let fan_out = match s.get("fan_out") {
                None | Some(Value::Null) => None,
                Some(f) => Some(fan_out_from(f, depth)?),
            };
            states.push(StateInfo {
                name: text(s, "name")?,
                kind,
                retry,
                timeout: duration(s.get("timeout_ms"))?,
                wait,
                fan_out,
            });
        }
        if states.is_empty() {
            return Err("no states".into());
        }
        let n = states.len();
        let mut transitions = Vec::new();
        for t in v
            .get("transitions")
            .and_then(Value::as_array)
            .ok_or("no `transitions`")?
        {
            transitions.push(Transition {
                from: index(t, "from", n)?,
                event: text(t, "event")?,
                to: index(t, "to", n)?,
                catch: t.get("catch").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        let initial = index(v, "initial", n)?;
        Ok(Box::leak(Box::new(Definition {
            name,
            states: Box::leak(states.into_boxed_slice()),
            initial,
            transitions: Box::leak(transitions.into_boxed_slice()),
        })))
    }
}

fn fan_out_value(f: &FanOut) -> Value {
    let branches: Vec<Value> = f
        .branches
        .iter()
        .map(|b| json!({ "name": b.name, "definition": b.definition.json_value() }))
        .collect();
    let mut v = json!({ "branches": branches, "compensate": f.compensate });
    match f.kind {
        FanOutKind::Parallel => v["kind"] = json!("parallel"),
        FanOutKind::Map {
            max_concurrency,
            tolerated_failures,
            tolerated_percent,
        } => {
            v["kind"] = json!("map");
            v["max_concurrency"] = json!(max_concurrency);
            v["tolerated_failures"] = json!(tolerated_failures);
            v["tolerated_percent"] = json!(tolerated_percent);
        }
    }
    v
}

fn fan_out_from(f: &Value, depth: usize) -> Result<&'static FanOut, String> {
    let number = |key: &str| -> Result<Option<u64>, String> {
        match f.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("`{key}` is not a whole number")),
        }
    };
    let kind = match f.get("kind").and_then(Value::as_str) {
        Some("parallel") => FanOutKind::Parallel,
        Some("map") => FanOutKind::Map {
            max_concurrency: number("max_concurrency")?
                .map_or(Ok(0), u32::try_from)
                .map_err(|_| "`max_concurrency` is too large")?,
            tolerated_failures: number("tolerated_failures")?
                .map(u32::try_from)
                .transpose()
                .map_err(|_| "`tolerated_failures` is too large")?,
            tolerated_percent: number("tolerated_percent")?
                .map(|p| u8::try_from(p).ok().filter(|p| *p <= 100))
                .map(|p| p.ok_or("`tolerated_percent` is over 100"))
                .transpose()?,
        },
        other => return Err(format!("a fan-out's kind is {other:?}")),
    };
    let mut branches = Vec::new();
    for b in f
        .get("branches")
        .and_then(Value::as_array)
        .ok_or("a fan-out has no `branches`")?
    {
        let name = b
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("a branch has no `name`")?;
        let definition = b.get("definition").ok_or("a branch has no `definition`")?;
        branches.push(Branch {
            name: Box::leak(name.to_owned().into_boxed_str()),
            definition: Definition::from_value(definition, depth + 1)?,
        });
    }
    if branches.is_empty() {
        return Err("a fan-out has no branches".into());
    }
    Ok(Box::leak(Box::new(FanOut {
        kind,
        branches: Box::leak(branches.into_boxed_slice()),
        compensate: f
            .get("compensate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })))
}

#[cfg(test)]
mod tests {
    use crate::{Definition, Jitter, RetryPolicy, StateInfo, StateKind, Transition, WaitPolicy};
    use core::time::Duration;

    #[test]
    fn a_definition_reads_back_as_it_was_written() {
        static STATES: [StateInfo; 3] = [
            StateInfo {
                name: "Placed",
                kind: StateKind::Step,
                retry: Some(RetryPolicy {
                    max_attempts: 3,
                    interval: Duration::from_millis(250),
                    backoff_rate: 2.0,
                    max_delay: Some(Duration::from_secs(5)),
                    jitter: Jitter::Full,
                }),
                timeout: Some(Duration::from_secs(1)),
                wait: None,
                fan_out: None,
            },
            StateInfo {
                name: "Shipped",
                kind: StateKind::Step,
                retry: None,
                timeout: None,
                wait: Some(WaitPolicy {
                    timeout: Some(Duration::from_secs(60)),
                }),
                fan_out: None,
            },
            StateInfo {
                name: "Lost",
                kind: StateKind::Failure,
                retry: None,
                timeout: None,
                wait: None,
                fan_out: None,
            },
        ];
        static TRANSITIONS: [Transition; 2] = [
            Transition {
                from: 0,
                event: "ship",
                to: 1,
                catch: false,
            },
            Transition {
                from: 1,
                event: "*",
                to: 2,
                catch: true,
            },
        ];
        let def = Definition {
            name: "Order",
            states: &STATES,
            initial: 0,
            transitions: &TRANSITIONS,
        };
        let back = Definition::from_json(&def.to_json()).unwrap();
        assert_eq!(*back, def);
        assert_eq!(back.fingerprint(), def.fingerprint());
    }

    #[test]
    fn a_malformed_definition_is_an_error_naming_what_is_wrong() {
        let bad = [
            ("[]", "no `name`"),
            (
                r#"{"name":"A","initial":0,"states":[],"transitions":[]}"#,
                "no states",
            ),
            (
                r#"{"name":"A","initial":3,"states":[{"name":"S","kind":"success"}],"transitions":[]}"#,
                "`initial` is not an index below 1",
            ),
            (
                r#"{"name":"A","initial":0,"states":[{"name":"S","kind":"odd"}],"transitions":[]}"#,
                "kind",
            ),
        ];
        for (text, expect) in bad {
            let err = Definition::from_json(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
