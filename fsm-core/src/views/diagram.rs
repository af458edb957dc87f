//! Diagrams of a machine, in Mermaid (`stateDiagram-v2`) and Graphviz DOT, with an
//! execution's path drawn over them.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BTreeMap;

use crate::{Definition, EventKind, History, StateKind, Transition};

/// A diagram of a machine's definition, optionally with the path one execution took.
///
/// ```
/// use fsm_core::{Fsm, views::Diagram};
///
/// #[derive(Fsm)]
/// enum Door {
///     #[fsm(initial, on(open => Open))]
///     Closed,
///     #[fsm(terminal)]
///     Open,
/// }
///
/// fn main() {
///     let mermaid = Diagram::new(Door::DEFINITION).mermaid();
///     assert!(mermaid.starts_with("stateDiagram-v2\n"));
///     assert!(mermaid.contains("Closed --> Open: open"));
///     let dot = Diagram::new(Door::DEFINITION).dot();
///     assert!(dot.contains("Closed -> Open [label=\"open\"]"));
/// }
/// ```
///
/// Output is deterministic: states and transitions in declaration order.
#[derive(Debug, Clone)]
pub struct Diagram<'a> {
    def: &'a Definition,
    path: Option<Path>,
}

/// What an execution did, as a diagram shows it.
#[derive(Debug, Clone, Default)]
struct Path {
    /// States entered, in definition order.
    visited: Vec<bool>,
    /// How many times each transition was taken.
    taken: BTreeMap<usize, u32>,
    /// The most attempts of each state's step.
    attempts: Vec<u32>,
    /// Where the execution stopped with an error no route took.
    failed: Option<usize>,
    /// Where the execution is (its last state).
    at: Option<usize>,
}

impl<'a> Diagram<'a> {
    /// The diagram of `def`.
    pub fn new(def: &'a Definition) -> Self {
        Diagram { def, path: None }
    }

    /// The same diagram with the path of the execution that recorded `history` drawn over it:
    /// the states it entered and the transitions it took (with how many times, when more than
    /// once), each retried step's attempts, and the state where it failed. Events naming
    /// states or transitions the definition does not have are left out.
    pub fn with_path(mut self, history: &History) -> Self {
        let def = self.def;
        let n = def.states.len();
        let mut p = Path {
            visited: vec![false; n],
            attempts: vec![0; n],
            ..Path::default()
        };
        for e in history.events() {
            let state = def.state_index(e.kind.state());
            match &e.kind {
                EventKind::ExecutionStarted { .. } | EventKind::ExecutionResumed { .. } => {
                    if let Some(i) = state {
                        p.visited[i] = true;
                        p.at = Some(i);
                    }
                }
                EventKind::StepStarted { attempt, .. } | EventKind::WaitStarted { attempt, .. } => {
                    if let Some(i) = state {
                        p.attempts[i] = p.attempts[i].max(*attempt);
                    }
                }
                EventKind::Transition { index, .. } => {
                    if let Some(t) = def.transitions.get(*index) {
                        *p.taken.entry(*index).or_default() += 1;
                        p.visited[t.from] = true;
                        p.visited[t.to] = true;
                        p.at = Some(t.to);
                    }
                }
                EventKind::ExecutionFailed { error: Some(_), .. } => p.failed = state,
                _ => {}
            }
        }
        self.path = Some(p);
        self
    }

    /// Transitions grouped as drawn: one edge per event and target, one per catch route
    /// (all the kinds it takes, on one edge).
    fn edges(&self) -> Vec<Edge> {
        let mut edges: Vec<Edge> = Vec::new();
        for (i, t) in self.def.transitions.iter().enumerate() {
            match edges
                .iter_mut()
                .find(|e| e.catch && t.catch && (e.from, e.to) == (t.from, t.to))
            {
                Some(e) => {
                    e.labels.push(kind_label(t));
                    e.indices.push(i);
                }
                None => edges.push(Edge {
                    from: t.from,
                    to: t.to,
                    catch: t.catch,
                    labels: vec![if t.catch {
                        kind_label(t)
                    } else {
                        t.event.to_owned()
                    }],
                    indices: vec![i],
                }),
            }
        }
        edges
    }

    fn times_taken(&self, edge: &Edge) -> u32 {
        self.path.as_ref().map_or(0, |p| {
            edge.indices.iter().filter_map(|i| p.taken.get(i)).sum()
        })
    }

    /// The lines that describe a state's policies (and, with a path, its attempts).
    fn notes(&self, i: usize) -> Vec<String> {
        let s = &self.def.states[i];
        let mut notes = Vec::new();
        if let Some(r) = s.retry.filter(|r| r.max_attempts > 0) {
            let mut line = format!(
                "retry up to {} times, from {}, x{}",
                r.max_attempts,
                duration(r.interval),
                float(r.backoff_rate)
            );
            if let Some(max) = r.max_delay {
                let _ = write!(line, ", at most {}", duration(max));
            }
            if r.jitter == crate::Jitter::Full {
                line.push_str(", full jitter");
            }
            notes.push(line);
        }
        if let Some(t) = s.timeout {
            notes.push(format!("timeout {}", duration(t)));
        }
        if let Some(w) = s.wait {
            notes.push(match w.timeout {
                Some(t) => format!("waits for a task token, at most {}", duration(t)),
                None => "waits for a task token".to_owned(),
            });
        }
        if let Some(p) = &self.path {
            if p.attempts[i] > 1 {
                notes.push(format!("{} attempts", p.attempts[i]));
            }
            if p.failed == Some(i) {
                notes.push("failed here".to_owned());
            }
        }
        notes
    }

    /// The diagram as Mermaid `stateDiagram-v2`: the initial state from `[*]`, terminal states
    /// to `[*]` (failure terminals styled `failure`), each event's edges labelled with the
    /// event, catch routes labelled `on error kind | kind` (Mermaid draws every transition
    /// alike, so the label tells them apart), policies as state descriptions. With a path:
    /// states entered styled `visited`, the failed state `failed`, transitions taken marked
    /// `(taken)` or `(taken n x)`.
    pub fn mermaid(&self) -> String {
        let def = self.def;
        let mut out = String::from("stateDiagram-v2\n");
        let _ = writeln!(out, "    direction LR");
        for (i, s) in def.states.iter().enumerate() {
            let notes = self.notes(i);
            if !notes.is_empty() {
                // Mermaid shows a described state's first line as its title.
                let _ = writeln!(out, "    {} : {}", s.name, s.name);
            }
            for note in notes {
                let _ = writeln!(out, "    {} : {}", s.name, mermaid_text(&note));
            }
        }
        let _ = writeln!(out, "    [*] --> {}", def.initial_state().name);
        for e in self.edges() {
            let mut label = if e.catch {
                format!("on error {}", e.labels.join(" | "))
            } else {
                e.labels.join(" | ")
            };
            match self.times_taken(&e) {
                0 => {}
                1 => label.push_str(" (taken)"),
                n => {
                    let _ = write!(label, " (taken {n} x)");
                }
            }
            let _ = writeln!(
                out,
                "    {} --> {}: {}",
                def.states[e.from].name,
                def.states[e.to].name,
                mermaid_text(&label)
            );
        }
        for s in def.terminals() {
            let _ = writeln!(out, "    {} --> [*]", s.name);
        }
        let failures: Vec<&str> = def
            .states
            .iter()
            .filter(|s| s.kind == StateKind::Failure)
            .map(|s| s.name)
            .collect();
        let _ = writeln!(out, "    classDef failure fill:#fde2e2,stroke:#c0392b");
        if !failures.is_empty() {
            let _ = writeln!(out, "    class {} failure", failures.join(","));
        }
        if let Some(p) = &self.path {
            let _ = writeln!(
                out,
                "    classDef visited fill:#d5f5e3,stroke:#1e8449,stroke-width:2px"
            );
            let _ = writeln!(
                out,
                "    classDef failed fill:#f5b7b1,stroke:#922b21,stroke-width:3px"
            );
            let visited: Vec<&str> = (0..def.states.len())
                .filter(|&i| p.visited[i] && p.failed != Some(i))
                .map(|i| def.states[i].name)
                .collect();
            if !visited.is_empty() {
                let _ = writeln!(out, "    class {} visited", visited.join(","));
            }
            if let Some(f) = p.failed {
                let _ = writeln!(out, "    class {} failed", def.states[f].name);
            }
        }
        out
    }

    /// The diagram as Graphviz DOT: the initial state from a point, success terminals with a
    /// double border, failure terminals with a red double border, catch routes dashed and red,
    /// labelled with their error kinds, policies in the states' labels. With a path: states
    /// entered filled green, the failed state filled red, transitions taken drawn thick and
    /// labelled with how many times when more than once.
    pub fn dot(&self) -> String {
        let def = self.def;
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", def.name);
        let _ = writeln!(out, "    rankdir=LR;");
        let _ = writeln!(
            out,
            "    node [shape=box, style=rounded, fontname=\"Helvetica\"];"
        );
        let _ = writeln!(out, "    edge [fontname=\"Helvetica\", fontsize=10];");
        let _ = writeln!(out, "    __start [shape=point, width=0.15, label=\"\"];");
        for (i, s) in def.states.iter().enumerate() {
            let mut label = s.name.to_owned();
            for note in self.notes(i) {
                label.push_str("\\n");
                label.push_str(&dot_text(&note));
            }
            let mut attrs = vec![format!("label=\"{label}\"")];
            let mut style = vec!["rounded"];
            match s.kind {
                StateKind::Step => {}
                StateKind::Success => attrs.push("peripheries=2".into()),
                StateKind::Failure => {
                    attrs.push("peripheries=2".into());
                    attrs.push("color=\"#c0392b\"".into());
                }
            }
            if let Some(p) = &self.path {
                if p.failed == Some(i) {
                    style.push("filled");
                    style.push("bold");
                    attrs.push("fillcolor=\"#f5b7b1\"".into());
                } else if p.visited[i] {
                    style.push("filled");
                    attrs.push("fillcolor=\"#d5f5e3\"".into());
                }
            }
            attrs.push(format!("style=\"{}\"", style.join(",")));
            let _ = writeln!(out, "    {} [{}];", s.name, attrs.join(", "));
        }
        let _ = writeln!(out, "    __start -> {};", def.initial_state().name);
        for e in self.edges() {
            let mut label = if e.catch {
                format!("on error {}", e.labels.join(" | "))
            } else {
                e.labels.join(" | ")
            };
            let taken = self.times_taken(&e);
            if taken > 1 {
                let _ = write!(label, " (x{taken})");
            }
            let mut attrs = vec![format!("label=\"{}\"", dot_text(&label))];
            if e.catch {
                attrs.push("style=dashed".into());
                attrs.push("color=\"#c0392b\"".into());
                attrs.push("fontcolor=\"#c0392b\"".into());
            }
            if taken > 0 {
                attrs.push("penwidth=2.5".into());
                if !e.catch {
                    attrs.push("color=\"#1e8449\"".into());
                }
            }
            let _ = writeln!(
                out,
                "    {} -> {} [{}];",
                def.states[e.from].name,
                def.states[e.to].name,
                attrs.join(", ")
            );
        }
        out.push_str("}\n");
        out
    }
}

/// An edge as drawn.
struct Edge {
    from: usize,
    to: usize,
    catch: bool,
    labels: Vec<String>,
    indices: Vec<usize>,
}

fn kind_label(t: &Transition) -> String {
    if t.event == "*" {
        "any error".to_owned()
    } else {
        t.event.to_owned()
    }
}

/// `1.5 s`, `100 ms`, `48 h`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1_000) && ms > 0 {
        format!("{} s", ms / 1_000)
    } else if ms >= 1_000 {
        format!("{} s", d.as_secs_f64())
    } else {
        format!("{ms} ms")
    }
}

/// A factor as written in a declaration: `2.0`, `1.5`.
fn float(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Text safe in a Mermaid description or label (no `:` or `;`, which end them, nor `#`).
fn mermaid_text(s: &str) -> String {
    s.replace([':', ';', '#'], " ")
}

/// Text safe inside a DOT double-quoted string.
fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
