//! The step trait (one async method per non-terminal state, returning only that state's
//! legal next states) and the dispatch the executor drives it through. Generated only when
//! fsm-core's `runtime` feature is on.

use super::events::{next_type, NextType};
use super::{lit, Src};
use crate::check::{self, Graph};
use crate::names::fn_name;

/// The `Steps` method of an error route, as source text.
fn catch_method(src: &Src, from: usize, to: usize) -> String {
    fn_name(&check::catch_method(
        src.m.states[from].ident,
        src.m.states[to].ident,
    ))
}

/// The `Steps` method of a state's step, as source text (raw when it is a keyword).
fn step_method(src: &Src, state: usize) -> String {
    fn_name(&check::step_method(src.m.states[state].ident))
}

/// States per step function in a large machine. rustc's cost of checking one `async` block
/// grows faster than the number of `.await`s in it: past `DISPATCH_CHUNK * 2` states with a
/// step, the loop is split into functions of this many states, each a loop of its own (an
/// execution crossing from one to another costs a few nanoseconds, so small machines keep
/// one `async` block).
const DISPATCH_CHUNK: usize = 32;

/// The loop's arms for `states`: keep the state (the driver gives back a copy for the step),
/// rebuild the typed state, await its
/// step through the driver, and move on to the next state. (The `else` of the `let` cannot
/// happen, the arm matched the state: `continue` leaves the value to the next round.)
///
/// Locals are prefixed `__`: the arms bind the state's fields by their names. `state` is the
/// loop's variable: `self` in `Dispatch::run` (one fewer copy of the state in its future),
/// `__state` in the functions of a large machine.
fn step_arms(src: &mut Src, g: &Graph, states: &[usize], state: &str) {
    for &i in states {
        let s = src.state(i);
        let pat = super::states::pattern(src.m.states[i].fields);
        let name = step_method(src, i);
        // Every state with a step has events (checked), so it has a next type.
        let Some(next) = next_type(src, g, i) else {
            continue;
        };
        let index = match next {
            NextType::Enum(_) => "__next.__index()".to_owned(),
            NextType::One { transition, .. } => transition.to_string(),
        };
        if src.m.states[i].fan_out.is_some() {
            fan_out_arm(src, i, &format!("{s}{pat}"), state, &name, &index);
            continue;
        }
        if src.m.states[i].wait.is_some() {
            // A waiting state's step hands out a token and returns nothing: the loop stops,
            // and the execution goes on when the token is answered.
            src.write(format_args!(
                "__Enum::{s} {{ .. }} => {{\
                   {state} = __driver.keep::<__K>({state});\
                   let __Enum::{s}{pat} = {state} else {{ continue }};\
                   let __cx = __driver.begin({i});\
                   let __token = match __driver.token::<__K>() {{\
                     __Result::Ok(__token) => __token,\
                     __Result::Err(__error) => return __Result::Err(__error),\
                   }};\
                   match __driver.attempt(__steps.{name}(Machine {{ state: {s}{pat} }}, __cx, __token)).await {{\
                     __Result::Ok(()) => {{}}\
                     __Result::Err(__error) => return __Result::Err(__error),\
                   }};\
                   return __Result::Err(__driver.wait())\
                 }}"
            ));
            continue;
        }
        src.write(format_args!(
            "__Enum::{s} {{ .. }} => {{\
               {state} = __driver.keep::<__K>({state});\
               let __Enum::{s}{pat} = {state} else {{ continue }};\
               let __cx = __driver.begin({i});\
               let __next = match __driver.attempt(__steps.{name}(Machine {{ state: {s}{pat} }}, __cx)).await {{\
                 __Result::Ok(__next) => __next,\
                 __Result::Err(__error) => return __Result::Err(__error),\
               }};\
               __driver.done({index});\
               <__Enum as ::core::convert::From<_>>::from(__next)\
             }}"
        ));
    }
}

/// Compensates the branch `__e` of state `i` with the `Steps` method `method`, and records
/// how it went.
fn compensate_call(i: usize, method: &str) -> String {
    format!(
        "let (__id, __at) = (__e.id(), __e.position());\
         let __r = __steps.{method}(__e, __cx).await;\
         __driver.compensated({i}, __id, __at, __r);"
    )
}

/// The loop's arm for a fanning-out state: its step (an attempt, retried as any step) returns
/// the branches' starting states; the branches run together to their ends
/// (`__private::parallel`/`map`), the branches that had succeeded are compensated when the
/// fan-out fails (if declared), and the join builds the next state from their results.
fn fan_out_arm(src: &mut Src, i: usize, pat: &str, state: &str, name: &str, index: &str) {
    let k = src.krate.clone();
    let s = src.state(i);
    let Some(fan) = src.m.states[i].fan_out.as_ref() else {
        return;
    };
    let ident = src.m.states[i].ident;
    let join = fn_name(&check::join_method(ident));
    let (run, results, compensate) = match &fan.map {
        None => {
            let n = fan.branches.len();
            let parts: Vec<String> = (0..n).map(|j| format!("__c{j}")).collect();
            let mut compensate = String::new();
            if fan.compensate {
                compensate.push_str(&format!("let ({},) = __failure.ended;", parts.join(", ")));
                for (j, (branch, _)) in fan.branches.iter().enumerate() {
                    let method = fn_name(&check::compensate_method(ident, Some(branch)));
                    let call = compensate_call(i, &method);
                    compensate.push_str(&format!(
                        "if let ::core::option::Option::Some(__e) = __c{j} {{ {call} }}"
                    ));
                }
            }
            let results: Vec<String> = (0..n).map(|j| format!("__ends.{j}")).collect();
            (
                format!("{k}::__private::parallel(__driver, __steps, {i}, __starts)"),
                results.join(", "),
                compensate,
            )
        }
        Some(map) => {
            let compensate = if fan.compensate {
                let method = fn_name(&check::compensate_method(ident, None));
                let call = compensate_call(i, &method);
                format!("for __e in __failure.ended {{ {call} }}")
            } else {
                String::new()
            };
            let results = if map.tolerates() {
                "__ends".to_owned()
            } else {
                format!("{k}::__private::all_ended(__ends)")
            };
            (
                format!("{k}::__private::map(__driver, __steps, {i}, __starts)"),
                results,
                compensate,
            )
        }
    };
    src.write(format_args!(
        "__Enum::{s} {{ .. }} => {{\
           {state} = __driver.keep::<__K>({state});\
           let __Enum::{pat} = {state} else {{ continue }};\
           let __cx = __driver.begin({i});\
           let __m = Machine {{ state: {pat} }};\
           let __starts = match __driver.attempt(__steps.{name}(&__m, __cx)).await {{\
             __Result::Ok(__starts) => __starts,\
             __Result::Err(__error) => return __Result::Err(__error),\
           }};\
           let __ends = match {run}.await {{\
             __Result::Ok(__ends) => __ends,\
             __Result::Err(__failure) => {{ {compensate} return __Result::Err(__failure.error) }}\
           }};\
           let __next = __steps.{join}(__m, {results});\
           __driver.done({index});\
           <__Enum as ::core::convert::From<_>>::from(__next)\
         }}"
    ));
}

/// The machines the states fan out to, each once, as type paths.
fn branch_types(src: &Src) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for (i, s) in src.m.states.iter().enumerate() {
        for j in 0..s.fan_out.as_ref().map_or(0, |f| f.branches.len()) {
            let ty = src.branch_type(i, j);
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
    }
    types
}

/// The bounds the step loop needs of the machines a state fans out to: each runs with the
/// same handlers.
fn fan_out_bounds(src: &Src) -> String {
    let k = &src.krate;
    branch_types(src)
        .iter()
        .map(|ty| {
            format!("{ty}: {k}::Dispatch<__H> + ::core::clone::Clone + {k}::__private::BranchData,")
        })
        .collect()
}

/// `Dispatch::branch_task` of a machine that fans out: each machine it runs as a branch, by
/// name, and theirs (empty for a machine without fan-out: the trait's default).
fn branch_task(src: &Src) -> String {
    let k = &src.krate;
    let types = branch_types(src);
    if types.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "fn branch_task(__machine: &::core::primitive::str) \
         -> ::core::option::Option<{k}::__private::BranchTask<__H>> {{"
    );
    for ty in &types {
        out.push_str(&format!(
            "if __machine == <{ty} as {k}::Fsm>::DEFINITION.name {{\
               return ::core::option::Option::Some({k}::__private::branch_task::<{ty}, __H>());\
             }}\
             if let ::core::option::Option::Some(__task) = <{ty} as {k}::Dispatch<__H>>::branch_task(__machine) {{\
               return ::core::option::Option::Some(__task);\
             }}"
        ));
    }
    out.push_str("::core::option::Option::None }");
    out
}

/// The `Steps` methods of a fanning-out state: its step returns the branches' starting
/// states, its join receives each branch's end and returns one of the state's next states,
/// and with `compensate` one method per branch undoes what a branch that had succeeded did.
fn fan_out_methods(src: &mut Src, i: usize, ret: &str, targets: &str) {
    let k = src.krate.clone();
    let s = src.state(i);
    let Some(fan) = src.m.states[i].fan_out.as_ref() else {
        return;
    };
    let ident = src.m.states[i].ident;
    let name = step_method(src, i);
    let join = fn_name(&check::join_method(ident));
    let types: Vec<String> = (0..fan.branches.len())
        .map(|j| src.branch_type(i, j))
        .collect();
    let branch_names: Vec<String> = fan
        .branches
        .iter()
        .map(|(b, _)| crate::names::unraw(b))
        .collect();
    match &fan.map {
        None => {
            let list: Vec<String> = branch_names
                .iter()
                .zip(&types)
                .map(|(b, t)| format!("`{b}` ({t})"))
                .collect();
            let doc = lit(&format!(
                "The step of `{s}`, which runs branches in parallel: returns the starting state \
                 of each branch, in order: {}. Each then runs as an execution of its own, with \
                 these handlers; `{join}` receives their ends. Called again on a retry.",
                list.join(", ")
            ));
            src.write(format_args!(
                "#[doc = {doc}] fn {name}(&self, state: &Machine<{s}>, cx: {k}::Context) \
                 -> impl {k}::__private::Future<Output = __Result<({},), {k}::StepError>> + ::core::marker::Send;",
                types.join(", ")
            ));
            let params: Vec<String> = branch_names
                .iter()
                .zip(&types)
                .map(|(b, t)| format!("{}: {k}::Ended<{t}>", fn_name(b)))
                .collect();
            let doc = lit(&format!(
                "The join of `{s}`: once every branch has succeeded, builds the next state, \
                 {targets}, from `{s}` and each branch's end."
            ));
            src.write(format_args!(
                "#[doc = {doc}] fn {join}(&self, state: Machine<{s}>, {}) -> {ret};",
                params.join(", ")
            ));
            if fan.compensate {
                for ((branch, _), t) in fan.branches.iter().zip(&types) {
                    let method = fn_name(&check::compensate_method(ident, Some(branch)));
                    let doc = lit(&format!(
                        "Undoes what branch `{}` of `{s}` did, when it had succeeded and another \
                         failed the state (`compensate`).",
                        crate::names::unraw(branch)
                    ));
                    src.write(format_args!(
                        "#[doc = {doc}] fn {method}(&self, ended: {k}::Ended<{t}>, cx: {k}::Context) \
                         -> impl {k}::__private::Future<Output = __Result<(), {k}::StepError>> + ::core::marker::Send;"
                    ));
                }
            }
        }
        Some(map) => {
            let t = &types[0];
            let doc = lit(&format!(
                "The step of `{s}`, which maps items: returns one starting state of `{t}` per \
                 item. Each item then runs as an execution of its own, with these handlers; \
                 `{join}` receives their ends, in order. Called again on a retry."
            ));
            src.write(format_args!(
                "#[doc = {doc}] fn {name}(&self, state: &Machine<{s}>, cx: {k}::Context) \
                 -> impl {k}::__private::Future<Output = __Result<::std::vec::Vec<{t}>, {k}::StepError>> + ::core::marker::Send;"
            ));
            let (items, what) = if map.tolerates() {
                (
                    format!("{k}::Items<{t}>"),
                    "each item's end, in order (`Err` for an item that failed, which the state tolerated)",
                )
            } else {
                (
                    format!("::std::vec::Vec<{k}::Ended<{t}>>"),
                    "each item's end, in order",
                )
            };
            let doc = lit(&format!(
                "The join of `{s}`: once every item has ended, builds the next state, {targets}, \
                 from `{s}` and {what}."
            ));
            src.write(format_args!(
                "#[doc = {doc}] fn {join}(&self, state: Machine<{s}>, items: {items}) -> {ret};"
            ));
            if fan.compensate {
                let method = fn_name(&check::compensate_method(ident, None));
                let doc = lit(&format!(
                    "Undoes what an item of `{s}` did, when it had succeeded and the state failed \
                     (`compensate`)."
                ));
                src.write(format_args!(
                    "#[doc = {doc}] fn {method}(&self, ended: {k}::Ended<{t}>, cx: {k}::Context) \
                     -> impl {k}::__private::Future<Output = __Result<(), {k}::StepError>> + ::core::marker::Send;"
                ));
            }
        }
    }
}

pub(super) fn write(src: &mut Src, g: &Graph) {
    let k = src.krate.clone();
    let e = src.m.ident.to_string();
    let doc = lit(&format!(
        "The steps of [`{e}`](super::{e}): one async method per state that is not terminal. \
         Each receives its typed state and returns one of that state's next states, made by \
         calling the typed state's events; an executor (`fsm_core::Executor`) drives \
         executions through it.\n\n\
         Implement it on a struct holding the clients of the services the steps call. A \
         `catch(...)` route adds a method that builds the route's target from the failed \
         state's data and the error."
    ));
    src.write(format_args!(
        "#[doc = {doc}] pub trait Steps: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    ));
    let steps: Vec<usize> = (0..src.m.states.len())
        .filter(|&i| !src.m.states[i].is_terminal())
        .collect();
    for &i in &steps {
        let s = src.state(i);
        let Some(next) = next_type(src, g, i) else {
            continue;
        };
        let ret = match next {
            NextType::Enum(next) => next,
            NextType::One { target, .. } => format!("Machine<{target}>"),
        };
        let targets: Vec<String> = g
            .edges_from(i)
            .map(|(_, e)| format!("`{}` (`{}`)", src.state(e.to), e.event))
            .collect();
        if src.m.states[i].fan_out.is_some() {
            fan_out_methods(src, i, &ret, &targets.join(" or "));
            continue;
        }
        if src.m.states[i].wait.is_some() {
            let doc = lit(&format!(
                "The step of waiting state `{s}`: starts the work and hands `token` to whoever \
                 will answer it (its text form travels). The execution then waits until the token \
                 is completed with {}, through `complete::<{s}, _>(token, ...)`, or failed. \
                 Called again on a retry, with a new token.",
                targets.join(" or ")
            ));
            src.write(format_args!(
                "#[doc = {doc}] fn {name}(&self, state: Machine<{s}>, cx: {k}::Context, token: {k}::TaskToken) \
                 -> impl {k}::__private::Future<Output = __Result<(), {k}::StepError>> + ::core::marker::Send;",
                name = step_method(src, i),
            ));
            continue;
        }
        let doc = lit(&format!(
            "The step of `{s}`: returns {}. Called again on a retry, with a new attempt number \
             and the same idempotency key.",
            targets.join(" or ")
        ));
        src.write(format_args!(
            "#[doc = {doc}] fn {name}(&self, state: Machine<{s}>, cx: {k}::Context) \
             -> impl {k}::__private::Future<Output = __Result<{ret}, {k}::StepError>> + ::core::marker::Send;",
            name = step_method(src, i),
        ));
    }
    let mut catch_methods: Vec<(usize, usize)> = Vec::new();
    for c in &g.catches {
        if !catch_methods.contains(&(c.from, c.to)) {
            catch_methods.push((c.from, c.to));
        }
    }
    for &(from, to) in &catch_methods {
        let kinds: Vec<String> = g
            .catches
            .iter()
            .filter(|c| (c.from, c.to) == (from, to))
            .map(|c| {
                if c.kind == "*" {
                    "any kind".to_owned()
                } else {
                    format!("`{}`", c.kind)
                }
            })
            .collect();
        let (s, t) = (src.state(from), src.state(to));
        let doc = lit(&format!(
            "Builds `{t}` when the step of `{s}` fails for good with an error of {}: \
             the route `catch(... => {t})` declared on `{s}`.",
            kinds.join(" or ")
        ));
        src.write(format_args!(
            "#[doc = {doc}] fn {name}(&self, failed: {s}, error: &{k}::StepError) -> {t};",
            name = catch_method(src, from, to),
        ));
    }
    src.push("}");

    // The step loop. `for<'__a> __Enum: Send` keeps a machine whose data is not `Send`
    // compiling (it just cannot run on the executor), where a plain bound would be an error.
    let chunks: Vec<&[usize]> = if steps.len() > 2 * DISPATCH_CHUNK {
        steps.chunks(DISPATCH_CHUNK).collect()
    } else {
        vec![&steps[..]]
    };
    let driver = format!("{k}::__private::Driver<'__b, __Enum>");
    let bounds = fan_out_bounds(src);
    if chunks.len() > 1 {
        for (c, chunk) in chunks.iter().enumerate() {
            // Each part runs its states' steps until the state leaves the part: the top-level
            // loop is entered again only when an execution moves on to another part.
            src.write(format_args!(
                "#[allow(unreachable_code)] async fn __step_{c}<'__b, __H: Steps, __K: {k}::__private::Keep<__Enum>>(\
                   mut __state: __Enum, __steps: &__H, __driver: &mut {driver}) \
                 -> __Result<__Enum, {k}::StepError> where {bounds} {{ loop {{ __state = match __state {{"
            ));
            step_arms(src, g, chunk, "__state");
            src.push("_ => return __Result::Ok(__state), }; } }");
        }
    }
    src.write(format_args!(
        "#[automatically_derived] impl<__H: Steps> {k}::Dispatch<__H> for __Enum \
         where for<'__a> __Enum: ::core::marker::Send, {bounds} {{\
           #[allow(unreachable_code)] fn run<'__a, '__b: '__a, __K: {k}::__private::Keep<Self>>(mut self, __steps: &'__a __H, __driver: &'__a mut {driver}) \
             -> impl {k}::__private::Future<Output = __Result<Self, {k}::StepError>> + ::core::marker::Send + '__a {{\
             async move {{ loop {{ self = match self {{"
    ));
    if chunks.len() > 1 {
        for (c, chunk) in chunks.iter().enumerate() {
            let states: Vec<String> = chunk
                .iter()
                .map(|&i| format!("__Enum::{} {{ .. }}", src.state(i)))
                .collect();
            src.write(format_args!(
                "{} => match __step_{c}::<__H, __K>(self, __steps, __driver).await {{\
                   __Result::Ok(__next) => __next,\
                   __Result::Err(__error) => return __Result::Err(__error),\
                 }},",
                states.join(" | ")
            ));
        }
    } else {
        step_arms(src, g, &steps, "self");
    }
    src.write(format_args!(
        "_ => return __Result::Ok(self), }}; }} }} }}\
         fn recover(self, __steps: &__H, __error: &{k}::StepError) -> __Result<(Self, ::core::primitive::usize), Self> {{\
           match self {{"
    ));
    let first_catch = g.edges.len();
    for &(from, to) in &catch_methods {
        let kinds: Vec<&str> = g
            .catches
            .iter()
            .filter(|c| (c.from, c.to) == (from, to))
            .map(|c| c.kind.as_str())
            .collect();
        let guard = if kinds.contains(&"*") {
            "true".to_owned()
        } else {
            format!(
                "::core::matches!(__error.kind(), {})",
                kinds.iter().map(|k| lit(k)).collect::<Vec<_>>().join(" | ")
            )
        };
        // The transition recorded is the route's edge for the kind that matched.
        let first = first_catch
            + g.catches
                .iter()
                .position(|c| (c.from, c.to) == (from, to))
                .unwrap_or(0);
        let index = if kinds.len() == 1 {
            first.to_string()
        } else {
            let arms: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(j, kind)| format!("{} => {}", lit(kind), first + j))
                .collect();
            format!(
                "match __error.kind() {{ {}, _ => {first} }}",
                arms.join(", ")
            )
        };
        let (s, t) = (src.state(from), src.state(to));
        let pat = super::states::pattern(src.m.states[from].fields);
        src.write(format_args!(
            "__Enum::{s}{pat} if {guard} => {{\
               let target: {t} = __steps.{name}({s}{pat}, __error);\
               __Result::Ok((<__Enum as ::core::convert::From<Machine<{t}>>>::from(Machine {{ state: target }}), {index}))\
             }}",
            name = catch_method(src, from, to),
        ));
    }
    src.push("other => __Result::Err(other), } }");
    let branch_task = branch_task(src);
    src.push(&branch_task);
    src.push("}");
    for &i in &steps {
        if src.m.states[i].wait.is_none() {
            continue;
        }
        let Some(next) = next_type(src, g, i) else {
            continue;
        };
        let (ret, index) = match next {
            NextType::Enum(next) => (next, "__next.__index()".to_owned()),
            NextType::One {
                target, transition, ..
            } => (format!("Machine<{target}>"), transition.to_string()),
        };
        let s = src.state(i);
        let name = lit(&crate::names::unraw(src.m.states[i].ident));
        src.write(format_args!(
            "#[automatically_derived] impl {k}::Waiting<__Enum> for {s} {{\
               type Typed = Machine<{s}>;\
               type Next = {ret};\
               const NAME: &'static ::core::primitive::str = {name};\
               fn typed(__m: __Enum) -> __Result<Machine<{s}>, __Wrong<__Enum>> {{\
                 <Machine<{s}> as ::core::convert::TryFrom<__Enum>>::try_from(__m)\
               }}\
               fn leave(__next: {ret}) -> (__Enum, ::core::primitive::usize) {{\
                 let __index = {index};\
                 (<__Enum as ::core::convert::From<_>>::from(__next), __index)\
               }}\
             }}"
        ));
    }
}
