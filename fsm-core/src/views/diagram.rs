//! Diagrams of a machine, in Mermaid (a flowchart) and Graphviz DOT, with an
//! execution's path drawn over them.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BTreeMap;

use crate::{Definition, EventKind, History, StateKind, Transition};

mod svg;

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
///     assert!(mermaid.starts_with("flowchart LR\n"));
///     assert!(mermaid.contains("Closed -->|\"open\"| Open"));
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
                // It goes on from where it failed or stopped.
                EventKind::ExecutionRedriven { .. } => p.failed = None,
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
        if let Some(fan) = s.fan_out {
            notes.push(fan_out_note(fan));
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

    /// The diagram as a Mermaid flowchart (`flowchart LR`): the initial state from a small
    /// black circle, step states rounded, terminal states as stadiums (success with a thick
    /// green border, failure filled red), each event's edges labelled with the event, catch
    /// routes dashed and red, labelled `on error kind or kind` (`on any error` for `_`),
    /// policies under the state's name. With a path: states entered filled green, the failed
    /// state filled red, transitions taken drawn thick (green, or red for a catch route), with
    /// how many times when more than once. (A flowchart, not a `stateDiagram-v2`: only a
    /// flowchart can style single transitions, with `linkStyle`.)
    pub fn mermaid(&self) -> String {
        let def = self.def;
        let mut out = String::from("flowchart LR\n");
        let id = |i: usize| mermaid_id(def.states[i].name);
        let _ = writeln!(out, "    __start(( ))");
        for (i, s) in def.states.iter().enumerate() {
            let mut text = mermaid_text(s.name);
            for note in self.notes(i) {
                let _ = write!(text, "<br/><small>{}</small>", mermaid_text(&note));
            }
            let (open, close) = mermaid_shape(s.kind);
            let _ = writeln!(out, "    {}{open}{text}{close}", id(i));
        }
        let _ = writeln!(out, "    __start --> {}", id(def.initial));
        // Links are numbered in order, the start's first: `linkStyle` names them so.
        let mut styles: Vec<(usize, &str)> = Vec::new();
        for (n, e) in self.edges().iter().enumerate() {
            let link = n + 1;
            let mut label = self.label(e);
            let taken = self.times_taken(e);
            if taken > 1 {
                let _ = write!(label, " ({taken} times)");
            }
            let arrow = if e.catch { "-.->" } else { "-->" };
            let _ = writeln!(
                out,
                "    {} {arrow}|\"{}\"| {}",
                id(e.from),
                mermaid_text(&label),
                id(e.to)
            );
            match (e.catch, taken > 0) {
                (false, false) => {}
                (false, true) => styles.push((link, "stroke:#1e8449,stroke-width:4px")),
                (true, false) => styles.push((link, "stroke:#c0392b,color:#c0392b")),
                (true, true) => {
                    styles.push((link, "stroke:#c0392b,stroke-width:4px,color:#c0392b"))
                }
            }
        }
        // The branches after every edge of the machine: their links come after its links,
        // whose numbers `linkStyle` uses. Their terminal states are styled as the machine's.
        let mut branch_ends: Vec<(StateKind, String)> = Vec::new();
        for (i, j, fan, branch) in self.branches() {
            let cluster = format!("{}__{j}", id(i));
            let node = |k: usize| {
                format!(
                    "{cluster}__{}",
                    mermaid_id(branch.definition.states[k].name)
                )
            };
            let _ = writeln!(
                out,
                "    subgraph {cluster}[\"{}\"]",
                mermaid_text(&branch_title(fan, branch))
            );
            let _ = writeln!(out, "        direction LR");
            for (k, b) in branch.definition.states.iter().enumerate() {
                let (open, close) = mermaid_shape(b.kind);
                let _ = writeln!(
                    out,
                    "        {}{open}{}{close}",
                    node(k),
                    mermaid_text(b.name)
                );
                if b.kind.is_terminal() {
                    branch_ends.push((b.kind, node(k)));
                }
            }
            for t in branch.definition.transitions {
                let arrow = if t.catch { "-.->" } else { "-->" };
                let _ = writeln!(
                    out,
                    "        {} {arrow}|\"{}\"| {}",
                    node(t.from),
                    mermaid_text(&kind_label(t)),
                    node(t.to)
                );
            }
            let _ = writeln!(out, "    end");
            let _ = writeln!(out, "    {} -.-o {cluster}", id(i));
        }
        for (link, style) in styles {
            let _ = writeln!(out, "    linkStyle {link} {style}");
        }
        let _ = writeln!(out, "    classDef start fill:#333,stroke:#333");
        let _ = writeln!(out, "    class __start start");
        let ends = |kind: StateKind| -> Vec<String> {
            (0..def.states.len())
                .filter(|&i| def.states[i].kind == kind)
                .map(id)
                .chain(
                    branch_ends
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, node)| node.clone()),
                )
                .collect()
        };
        let _ = writeln!(out, "    classDef success stroke:#1e8449,stroke-width:3px");
        let _ = writeln!(
            out,
            "    classDef failure fill:#fde2e2,stroke:#c0392b,stroke-width:3px"
        );
        for (kind, class) in [
            (StateKind::Success, "success"),
            (StateKind::Failure, "failure"),
        ] {
            let ends = ends(kind);
            if !ends.is_empty() {
                let _ = writeln!(out, "    class {} {class}", ends.join(","));
            }
        }
        if let Some(p) = &self.path {
            let _ = writeln!(out, "    classDef visited fill:#d5f5e3");
            let _ = writeln!(
                out,
                "    classDef failed fill:#f5b7b1,stroke:#922b21,stroke-width:3px"
            );
            // A failure terminal reached stays red, darker: the execution ended there.
            let _ = writeln!(
                out,
                "    classDef reached_failure fill:#f5b7b1,stroke:#c0392b,stroke-width:4px"
            );
            let reached = |failure: bool| -> Vec<String> {
                (0..def.states.len())
                    .filter(|&i| p.visited[i] && p.failed != Some(i))
                    .filter(|&i| (def.states[i].kind == StateKind::Failure) == failure)
                    .map(id)
                    .collect()
            };
            for (failure, class) in [(false, "visited"), (true, "reached_failure")] {
                let states = reached(failure);
                if !states.is_empty() {
                    let _ = writeln!(out, "    class {} {class}", states.join(","));
                }
            }
            if let Some(f) = p.failed {
                let _ = writeln!(out, "    class {} failed", id(f));
            }
        }
        out
    }

    /// An edge's label: its events, or for a catch route the errors it takes.
    fn label(&self, e: &Edge) -> String {
        if !e.catch {
            return e.labels.join(" or ");
        }
        if e.labels.iter().any(|l| l == ANY_ERROR) {
            return "on any error".to_owned();
        }
        format!("on error {}", e.labels.join(" or "))
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
            let mut label = self.label(&e);
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
        for (i, j, fan, branch) in self.branches() {
            let parent = def.states[i].name;
            let node = |k: usize| format!("{parent}__{j}__{}", branch.definition.states[k].name);
            let title = dot_text(&branch_title(fan, branch));
            let _ = writeln!(out, "    subgraph cluster_{parent}__{j} {{");
            let _ = writeln!(
                out,
                "        label=\"{title}\"; style=\"dashed,rounded\"; color=\"#7f8c8d\"; fontname=\"Helvetica\";"
            );
            for (k, b) in branch.definition.states.iter().enumerate() {
                let extra = match b.kind {
                    StateKind::Step => "",
                    StateKind::Success => ", peripheries=2",
                    StateKind::Failure => ", peripheries=2, color=\"#c0392b\"",
                };
                let _ = writeln!(out, "        {} [label=\"{}\"{extra}];", node(k), b.name);
            }
            for t in branch.definition.transitions {
                let style = if t.catch {
                    ", style=dashed, color=\"#c0392b\""
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "        {} -> {} [label=\"{}\"{style}];",
                    node(t.from),
                    node(t.to),
                    dot_text(&kind_label(t))
                );
            }
            let _ = writeln!(out, "    }}");
            let _ = writeln!(
                out,
                "    {parent} -> {} [style=dotted, arrowhead=odot, label=\"{}\"];",
                node(branch.definition.initial),
                dot_text(branch.name)
            );
        }
        out.push_str("}\n");
        out
    }

    /// Each branch of each fanning-out state: the state, the branch's position, the branch.
    fn branches(
        &self,
    ) -> impl Iterator<Item = (usize, usize, &'static crate::FanOut, &'static crate::Branch)> + '_
    {
        self.def.states.iter().enumerate().flat_map(|(i, s)| {
            s.fan_out.into_iter().flat_map(move |f| {
                f.branches
                    .iter()
                    .enumerate()
                    .map(move |(j, b)| (i, j, f, b))
            })
        })
    }
}

/// The title of a branch's cluster: `customer: Notify`, or for a Map `each item: Parcel`.
fn branch_title(fan: &crate::FanOut, branch: &crate::Branch) -> String {
    match fan.kind {
        crate::FanOutKind::Map { .. } => format!("each item: {}", branch.definition.name),
        _ => format!("{}: {}", branch.name, branch.definition.name),
    }
}

/// What a fanning-out state does, under its name.
fn fan_out_note(fan: &crate::FanOut) -> String {
    let mut note = match fan.kind {
        crate::FanOutKind::Parallel => {
            let names: Vec<&str> = fan.branches.iter().map(|b| b.name).collect();
            format!("runs {} in parallel", names.join(", "))
        }
        crate::FanOutKind::Map {
            max_concurrency,
            tolerated_failures,
            tolerated_percent,
        } => {
            let machine = fan.branches.first().map_or("?", |b| b.definition.name);
            let mut note = format!("maps items through {machine}");
            if max_concurrency > 0 {
                let _ = write!(note, ", {max_concurrency} at once");
            }
            if let Some(n) = tolerated_failures {
                let _ = write!(note, ", tolerates {n} failed");
            }
            if let Some(p) = tolerated_percent {
                let _ = write!(note, ", tolerates {p}% failed");
            }
            note
        }
    };
    if fan.compensate {
        note.push_str(", compensated");
    }
    note
}

/// An edge as drawn.
struct Edge {
    from: usize,
    to: usize,
    catch: bool,
    labels: Vec<String>,
    indices: Vec<usize>,
}

/// The label of a catch-all route's kind.
const ANY_ERROR: &str = "any error";

fn kind_label(t: &Transition) -> String {
    if t.event == "*" {
        ANY_ERROR.to_owned()
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

/// The brackets of a Mermaid node of a state of `kind`: rounded for a step, a stadium for a
/// terminal state.
fn mermaid_shape(kind: StateKind) -> (&'static str, &'static str) {
    match kind {
        StateKind::Step => ("(\"", "\")"),
        StateKind::Success | StateKind::Failure => ("([\"", "\"])"),
    }
}

/// Text safe in a quoted Mermaid label: its quotes and HTML written as entities.
fn mermaid_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "#quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A state's node id: its name, unless Mermaid reads that name as a keyword.
fn mermaid_id(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "class",
        "classDef",
        "click",
        "linkStyle",
        "direction",
        "default",
    ];
    if KEYWORDS.contains(&name) || name.starts_with("__") {
        format!("state_{name}")
    } else {
        name.to_owned()
    }
}

/// Text safe inside a DOT double-quoted string.
fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
