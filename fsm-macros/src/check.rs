//! The declaration and graph rules, one function per rule, each stated above it. Every rule
//! runs even when another failed, so that one build reports every mistake; the graph rules
//! use the edges whose targets exist.

use std::collections::{HashMap, VecDeque};

use syn::Ident;

use crate::ast::Machine;
use crate::ctxt::Ctxt;
use crate::names;

/// The machine's graph with targets resolved to state indices: what code generation sees.
pub(crate) struct Graph<'a> {
    pub(crate) initial: usize,
    /// The event transitions, state by state, in declaration order.
    pub(crate) edges: Vec<Edge<'a>>,
    /// The catch edges, one per error kind, after the events in the definition.
    pub(crate) catches: Vec<CatchEdge>,
}

impl<'a> Graph<'a> {
    /// The event transitions leaving `from`, each with its index in the definition.
    ///
    /// Edges are listed state by state, in the order of the states: the ones of `from` are
    /// found by binary search (the derive calls this for every state, and at hundreds of
    /// states a scan of every edge each time shows in the build).
    pub(crate) fn edges_from(&self, from: usize) -> impl Iterator<Item = (usize, &Edge<'a>)> {
        let start = self.edges.partition_point(|e| e.from < from);
        self.edges[start..]
            .iter()
            .take_while(move |e| e.from == from)
            .enumerate()
            .map(move |(i, e)| (start + i, e))
    }
}

/// `catch(kind => Target)` on state `from`, for one kind (`"*"` for any).
pub(crate) struct CatchEdge {
    pub(crate) from: usize,
    pub(crate) kind: String,
    pub(crate) to: usize,
}

pub(crate) struct Edge<'a> {
    pub(crate) from: usize,
    pub(crate) event: &'a Ident,
    pub(crate) to: usize,
    /// The target as written in `on(...)`, for spans.
    pub(crate) target: &'a Ident,
}

/// Names the generated module defines besides the states' own.
const RESERVED_STATE_NAMES: &[&str] = &["Machine", "AnyState", "Steps", "typestate"];
/// Methods of the typed state that an event cannot shadow.
const RESERVED_EVENT_NAMES: &[&str] = &["new", "data", "into_data"];

/// Whether the generated module defines `name` for itself: `Machine`, `AnyState`, `Steps`, the
/// `Next` enum of a state, the `choice` module of the branching events' enums, or a hidden
/// `__` item.
/// Names compare as Rust compares them: `r#Machine` is `Machine`.
pub(crate) fn is_module_name(m: &Machine, name: &str) -> bool {
    let name = name.strip_prefix("r#").unwrap_or(name);
    RESERVED_STATE_NAMES.contains(&name)
        || name.starts_with("__")
        || name
            .strip_suffix("Next")
            .is_some_and(|base| m.index_of_str(base).is_some())
        || (m.has_choices && name == names::CHOICE)
        || (name == names::ERRORS && !names::error_kinds(m).is_empty())
}

/// Whether `name` is a method every typed state already has, or a hidden one.
pub(crate) fn is_reserved_event(name: &str) -> bool {
    let name = name.strip_prefix("r#").unwrap_or(name);
    RESERVED_EVENT_NAMES.contains(&name) || name.starts_with("__")
}

/// The method of the generated `Steps` trait that runs `state`'s step: `PaymentDeclined` ->
/// `payment_declined`.
pub(crate) fn step_method(state: &Ident) -> String {
    names::snake_case(&names::unraw(state))
}

/// The method of the generated `Steps` trait that builds the target of an error route:
/// `catch_reserved_to_payment_declined`.
pub(crate) fn catch_method(from: &Ident, to: &Ident) -> String {
    format!("catch_{}_to_{}", step_method(from), step_method(to))
}

pub(crate) fn check<'a>(cx: &mut Ctxt, m: &'a Machine<'a>) -> Option<Graph<'a>> {
    let initial = one_initial(cx, m);
    initial_is_not_terminal(cx, m);
    terminal_has_no_events(cx, m);
    non_terminal_has_events(cx, m);
    events_are_unique_per_state(cx, m);
    reserved_names_are_free(cx, m);
    event_traits_are_distinct(cx, m);
    step_methods_are_distinct(cx, m);
    step_policies_are_on_steps(cx, m);
    fan_out_is_not_a_wait(cx, m);
    let (edges, all_targets_exist) = targets_exist(cx, m);
    let (catches, all_catch_targets_exist) = catch_targets_exist(cx, m);
    catch_kinds_are_unique_per_state(cx, m);
    error_constants_are_distinct(cx, m);
    targets_are_unique_per_state(cx, m, &edges);
    let initial = initial?;
    // With a misspelt target or an unreadable key the intended graph is unknown: reachability
    // errors would only echo that mistake.
    if !all_targets_exist || !all_catch_targets_exist || m.states.iter().any(|s| s.tainted) {
        return None;
    }
    let pairs: Vec<(usize, usize)> = edges
        .iter()
        .map(|e| (e.from, e.to))
        .chain(catches.iter().map(|c| (c.from, c.to)))
        .collect();
    let reachable = every_state_is_reachable(cx, m, initial, &pairs);
    a_terminal_is_reachable(cx, m, &reachable, &pairs);
    if cx.has_errors() {
        return None;
    }
    Some(Graph {
        initial,
        edges,
        catches,
    })
}

/// Exactly one state is `initial`: it is where every execution starts.
fn one_initial(cx: &mut Ctxt, m: &Machine) -> Option<usize> {
    let mut initials = m
        .states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.initial.as_ref()?)));
    let Some((first, _)) = initials.next() else {
        if m.states.iter().any(|s| s.tainted) {
            return None;
        }
        cx.error(
            m.ident,
            format!(
                "machine `{}` has no initial state; mark the state where executions start with `#[fsm(initial)]`",
                m.ident
            ),
        );
        return None;
    };
    for (_, key) in initials {
        cx.error(
            key,
            format!(
                "more than one initial state: `{}` is already initial; keep `#[fsm(initial)]` on one state",
                m.states[first].ident
            ),
        );
    }
    Some(first)
}

/// The initial state is not terminal: an execution would end before it began.
fn initial_is_not_terminal(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        if let (Some(_), Some(t)) = (&s.initial, &s.terminal) {
            cx.error(
                &t.key,
                format!("the initial state `{}` cannot be terminal: an execution would end before it began", s.ident),
            );
        }
    }
}

/// A terminal state has no events: an execution ends there.
fn terminal_has_no_events(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        if let (Some(_), Some(on)) = (&s.terminal, s.on.first()) {
            cx.error(
                &on.event,
                format!(
                    "terminal state `{}` cannot have events: an execution ends there; remove `on({} => ...)` or `terminal`",
                    s.ident, on.event
                ),
            );
        }
    }
}

/// A non-terminal state has at least one event: otherwise an execution would be stuck there.
fn non_terminal_has_events(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        if !s.is_terminal() && s.on.is_empty() && !s.tainted {
            cx.error(
                s.ident,
                format!(
                    "state `{}` has no way out; add `#[fsm(on(event => Target))]`, or mark it `#[fsm(terminal)]` or `#[fsm(terminal(failure))]`",
                    s.ident
                ),
            );
        }
    }
}

/// An event is declared once per state; a branching event lists all its targets in one `on`.
fn events_are_unique_per_state(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        for (i, on) in s.on.iter().enumerate() {
            if s.on[..i]
                .iter()
                .any(|prev| names::same(&prev.event, &on.event))
            {
                cx.error(
                    &on.event,
                    format!(
                        "event `{}` is declared twice on `{}`; list every target in one `on({} => A | B)`",
                        on.event, s.ident, on.event
                    ),
                );
            }
        }
    }
}

/// Every target is a state of this machine. Returns the edges whose targets exist, and whether
/// that is all of them.
fn targets_exist<'a>(cx: &mut Ctxt, m: &'a Machine<'a>) -> (Vec<Edge<'a>>, bool) {
    let mut edges = Vec::new();
    let mut all = true;
    for (from, s) in m.states.iter().enumerate() {
        for on in &s.on {
            for target in &on.targets {
                match m.index_of(target) {
                    Some(to) => edges.push(Edge {
                        from,
                        event: &on.event,
                        to,
                        target,
                    }),
                    None => {
                        all = false;
                        let written = on_as_written(on);
                        unknown_state(cx, m, target, &written);
                    }
                }
            }
        }
    }
    (edges, all)
}

/// `on(charge => Piad | Declined)`, as the user wrote it.
fn on_as_written(on: &crate::attr::On) -> String {
    let targets: Vec<String> = on.targets.iter().map(names::unraw).collect();
    format!("on({} => {})", names::unraw(&on.event), targets.join(" | "))
}

/// Retries, timeouts and error routes belong to states with a step: a terminal state runs
/// nothing.
fn step_policies_are_on_steps(cx: &mut Ctxt, m: &Machine) {
    for s in m.states.iter().filter(|s| s.is_terminal()) {
        let keys = s
            .retry
            .iter()
            .map(|r| &r.key)
            .chain(s.timeout_ms.iter().map(|t| &t.0))
            .chain(s.wait.iter().map(|w| &w.key))
            .chain(s.fan_out.iter().map(|f| &f.key));
        for key in keys.chain(s.catch.iter().map(|c| &c.key)) {
            cx.error(
                key,
                format!(
                    "terminal state `{}` has no step to apply `{key}` to; remove it",
                    s.ident
                ),
            );
        }
    }
}

/// A state that waits hands out a token and stops; it cannot also fan out.
fn fan_out_is_not_a_wait(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        if let (Some(fan), Some(_)) = (&s.fan_out, &s.wait) {
            cx.error(
                &fan.key,
                format!(
                    "state `{}` waits for a token, so it cannot also fan out; wait in a state before or after this one",
                    names::unraw(s.ident)
                ),
            );
        }
    }
}

/// The method of the generated `Steps` trait that joins a fanning-out state's branches:
/// `join_payment_declined`.
pub(crate) fn join_method(state: &Ident) -> String {
    format!("join_{}", step_method(state))
}

/// The method that compensates branch `branch` of `state` (a Map's items: `None`).
pub(crate) fn compensate_method(state: &Ident, branch: Option<&Ident>) -> String {
    match branch {
        Some(b) => format!("compensate_{}_{}", step_method(state), names::unraw(b)),
        None => format!("compensate_{}", step_method(state)),
    }
}

/// Every `catch` target is a state of this machine.
fn catch_targets_exist(cx: &mut Ctxt, m: &Machine) -> (Vec<CatchEdge>, bool) {
    let mut out = Vec::new();
    let mut all = true;
    for (from, s) in m.states.iter().enumerate() {
        for catch in &s.catch {
            let target = &catch.target;
            match m.index_of(target) {
                Some(to) => out.extend(catch.kinds.iter().map(|(kind, _)| CatchEdge {
                    from,
                    kind: kind.clone(),
                    to,
                })),
                None => {
                    all = false;
                    unknown_state(cx, m, target, &format!("catch(... => {target})"));
                }
            }
        }
    }
    (out, all)
}

/// Distinct error kinds get distinct constants in `errors` (`a_b` and `A_B` would not).
fn error_constants_are_distinct(cx: &mut Ctxt, m: &Machine) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (kind, span) in m
        .states
        .iter()
        .flat_map(|s| &s.catch)
        .flat_map(|c| &c.kinds)
    {
        let kind = kind.strip_prefix("r#").unwrap_or(kind);
        if kind == "*" {
            continue;
        }
        let name = names::error_const(kind);
        match seen.get(name.as_str()) {
            Some(prev) if *prev != kind => cx.push(syn::Error::new(
                *span,
                format!(
                    "error kinds `{prev}` and `{kind}` would both be `{}::{name}`; rename one",
                    names::ERRORS
                ),
            )),
            _ => {
                seen.insert(name, kind);
            }
        }
    }
}

/// An error kind is routed once per state, and `_` (any error) comes last: otherwise which
/// route wins would be a guess.
fn catch_kinds_are_unique_per_state(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        let mut seen: Vec<&str> = Vec::new();
        for (kind, span) in s.catch.iter().flat_map(|c| &c.kinds) {
            if seen.contains(&"*") && kind != "*" {
                cx.push(syn::Error::new(
                    *span,
                    format!("`{kind}` is caught after `_` on `{}`, which already caught it; move `_` to the last `catch`", s.ident),
                ));
            }
            if seen.contains(&kind.as_str()) {
                let shown = if kind == "*" { "_" } else { kind };
                cx.push(syn::Error::new(
                    *span,
                    format!(
                        "error kind `{shown}` is caught twice on `{}`; keep one route",
                        s.ident
                    ),
                ));
            }
            seen.push(kind);
        }
    }
}

/// Reports a name that is not a state, suggesting the closest state's name.
fn unknown_state(cx: &mut Ctxt, m: &Machine, target: &Ident, written: &str) {
    let target_token = target;
    let names = m
        .states
        .iter()
        .map(|s| names::unraw(s.ident))
        .collect::<Vec<_>>();
    let hint = names::closest(&names::unraw(target), names.iter().map(String::as_str))
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_else(|| format!("; the states of `{}` are its variants", m.ident));
    let target = names::unraw(target);
    cx.error(
        target_token,
        format!("unknown state `{target}` in `{written}`{hint}"),
    );
}

/// A state reaches each target through one event, once: the typed state an event returns
/// names its target, and a step's result must tell which event led there.
fn targets_are_unique_per_state(cx: &mut Ctxt, m: &Machine, edges: &[Edge]) {
    let mut seen: HashMap<(usize, usize), &Ident> = HashMap::new();
    for e in edges {
        let (target, event) = (e.target, e.event);
        match seen.get(&(e.from, e.to)) {
            Some(prev) if names::same(prev, event) => cx.error(
                target,
                format!("`{target}` is listed twice in `on({event} => ...)`; remove one"),
            ),
            Some(prev) => cx.error(
                target,
                format!(
                    "`{}` already reaches `{target}` through `{prev}`; a state reaches each target through one event, so merge them into one event",
                    m.states[e.from].ident
                ),
            ),
            None => {
                seen.insert((e.from, e.to), event);
            }
        }
    }
}

/// Every state is reachable from the initial state; an unreachable state is dead code.
fn every_state_is_reachable(
    cx: &mut Ctxt,
    m: &Machine,
    initial: usize,
    edges: &[(usize, usize)],
) -> Vec<bool> {
    let reachable = search(m.states.len(), [initial], edges, |&(a, b)| (a, b));
    for (s, &r) in m.states.iter().zip(&reachable) {
        if !r {
            cx.error(
                s.ident,
                format!(
                    "state `{}` is unreachable from the initial state `{}`; add an event that leads to it, or remove it",
                    s.ident, m.states[initial].ident
                ),
            );
        }
    }
    reachable
}

/// From every reachable state some terminal state can be reached: an execution can always end.
fn a_terminal_is_reachable(
    cx: &mut Ctxt,
    m: &Machine,
    reachable: &[bool],
    edges: &[(usize, usize)],
) {
    // A non-terminal state without events has its own error; counting it as an end here keeps
    // that one mistake from being reported again for every state that leads to it.
    let ends = m
        .states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_terminal() || s.on.is_empty());
    let terminals = ends.map(|(i, _)| i);
    let can_end = search(m.states.len(), terminals, edges, |&(a, b)| (b, a));
    for (i, s) in m.states.iter().enumerate() {
        // A state with no events at all has its own error already.
        if reachable[i] && !can_end[i] && !s.on.is_empty() {
            cx.error(
                s.ident,
                format!(
                    "no terminal state can be reached from `{}`: an execution that gets here never ends; add an event that leads towards a terminal state",
                    s.ident
                ),
            );
        }
    }
}

/// The names the generated module defines are not taken by a state, and the typed state's own
/// methods are not taken by an event.
fn reserved_names_are_free(cx: &mut Ctxt, m: &Machine) {
    for s in &m.states {
        let name = names::unraw(s.ident);
        if is_module_name(m, &name) {
            cx.error(
                s.ident,
                format!(
                    "`{name}` is a name the generated module `{}` uses for itself; rename this state",
                    m.module
                ),
            );
        }
        for on in &s.on {
            let event = names::unraw(&on.event);
            if is_reserved_event(&event) {
                cx.error(
                    &on.event,
                    format!("`{event}` is a method of every typed state; rename this event"),
                );
            }
        }
    }
}

/// Distinct events get distinct names in CamelCase (`ship_it` and `shipIt` would not).
fn event_traits_are_distinct(cx: &mut Ctxt, m: &Machine) {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    for on in m.states.iter().flat_map(|s| &s.on) {
        let camel = names::event_trait(&on.event);
        match seen.get(camel.as_str()) {
            Some(prev) if !names::same(prev, &on.event) => cx.error(
                &on.event,
                format!(
                    "events `{prev}` and `{}` are too alike; rename one",
                    on.event
                ),
            ),
            _ => {
                seen.insert(camel, &on.event);
            }
        }
    }
}

/// The generated `Steps` trait has one method per state with a step and one per error route,
/// named after the states in snake case: two of them must not get the same name (`Paid` and
/// `PAID` would both run `paid`; a state `CatchAToB` beside a route from `A` to `B` would
/// both be `catch_a_to_b`).
fn step_methods_are_distinct(cx: &mut Ctxt, m: &Machine) {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut claim = |cx: &mut Ctxt, method: String, span: &Ident, what: String| {
        match seen.get(&method) {
            Some(prev) => cx.error(
                span,
                format!(
                    "{what} would get the step method `{method}`, which {prev} already has; rename one of them"
                ),
            ),
            None => {
                seen.insert(method, what);
            }
        }
    };
    for s in m.states.iter().filter(|s| !s.is_terminal()) {
        let what = format!("state `{}`", names::unraw(s.ident));
        claim(cx, step_method(s.ident), s.ident, what);
        if let Some(fan) = &s.fan_out {
            let what = format!("the join of `{}`", names::unraw(s.ident));
            claim(cx, join_method(s.ident), &fan.key, what);
            if fan.compensate {
                for (branch, _) in &fan.branches {
                    let named = fan.map.is_none().then_some(branch);
                    let what = format!("the compensation of `{}`", names::unraw(s.ident));
                    claim(cx, compensate_method(s.ident, named), branch, what);
                }
            }
        }
    }
    for s in &m.states {
        let mut targets: Vec<&Ident> = Vec::new();
        for catch in &s.catch {
            let Some(to) = m.index_of(&catch.target) else {
                continue;
            };
            let to = m.states[to].ident;
            if targets.iter().any(|t| names::same(t, to)) {
                continue;
            }
            targets.push(to);
            let what = format!(
                "the route `catch(... => {})` of `{}`",
                names::unraw(to),
                names::unraw(s.ident)
            );
            claim(cx, catch_method(s.ident, to), &catch.target, what);
        }
    }
}

/// Breadth-first search from `starts` over `edges`, each read as `dir(edge) = (a, b)`: which
/// states can be reached.
fn search(
    n: usize,
    starts: impl IntoIterator<Item = usize>,
    edges: &[(usize, usize)],
    dir: impl Fn(&(usize, usize)) -> (usize, usize),
) -> Vec<bool> {
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in edges {
        let (a, b) = dir(e);
        next[a].push(b);
    }
    let mut seen = vec![false; n];
    let mut queue = VecDeque::new();
    for s in starts {
        seen[s] = true;
        queue.push_back(s);
    }
    while let Some(at) = queue.pop_front() {
        for &b in &next[at] {
            if !seen[b] {
                seen[b] = true;
                queue.push_back(b);
            }
        }
    }
    seen
}
