#!/usr/bin/env python3
"""Compile-time benchmark: what `#[derive(Fsm)]` costs on every build.

Generates one machine shape twice -- a chain of N states with a branch to a failure state at
every 5th state and a `u64` in each state -- as hand-written typestate code and as a
`#[derive(Fsm)]` enum (fsm-core without default features: the typestate layer), each with a
driver that walks the chain. Then, alternating between the two so that machine drift hits
both alike, it touches `src/main.rs` and times `cargo build` (debug, incremental: what a
developer waits for after an edit), and reads `rustc -Z time-passes` for the share of
rustc's time spent in macro expansion.

    python3 benches/compile_time.py            # N=200, 9 rounds
    python3 benches/compile_time.py --n 50 --rounds 5
    python3 benches/compile_time.py --instructions   # also rustc's instructions (callgrind)

`--instructions` runs the `rustc` command of each touch rebuild under
`valgrind --tool=callgrind` and reports the instructions rustc executes, and those of the
derive's own run: the same count for the same code on every run, whatever else the machine
is doing (wall times on a shared machine move by 10% and more between runs).

Prints medians and the median of the per-round ratios. Work happens in
target/compile-bench (dependencies are built once, untimed).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "compile-bench")
SENTINEL = "0x5EED_0000_DEAD_BEEF"


def branches(n):
    return [i for i in range(n - 1) if i % 5 == 4]


def hand(n):
    out = ["pub struct Machine<S> { pub state: S }"]
    out += [f"pub struct S{i}(pub u64);" for i in range(n)]
    out += [f"pub struct F{b}(pub u64);" for b in branches(n)]
    out.append("impl Machine<S0> { pub fn new(x: u64) -> Self { Machine { state: S0(x) } } }")
    for i in range(n - 1):
        if i in branches(n):
            out.append(
                f"impl Machine<S{i}> {{ pub fn t{i}(self) -> Result<Machine<S{i+1}>, Machine<F{i}>> {{ "
                f"let x = self.state.0; if x == SENTINEL {{ Err(Machine {{ state: F{i}(x) }}) }} "
                f"else {{ Ok(Machine {{ state: S{i+1}(x.wrapping_add(1)) }}) }} }} }}")
        else:
            out.append(f"impl Machine<S{i}> {{ pub fn t{i}(self) -> Machine<S{i+1}> {{ "
                       f"Machine {{ state: S{i+1}(self.state.0.wrapping_add(1)) }} }} }}")
    body = ["    let m = Machine::<S0>::new(seed);"]
    for i in range(n - 1):
        if i in branches(n):
            body.append(f"    let m = match m.t{i}() {{ Ok(m) => black_box(m), Err(f) => return !f.state.0 ^ {i} }};")
        else:
            body.append(f"    let m = black_box(m.t{i}());")
    body.append("    m.state.0")
    return "\n".join(out), "\n".join(body)


def derived(n):
    out = ["use fsm_core::Fsm;", "#[derive(Fsm)]", "pub enum Chain {"]
    for i in range(n):
        if i == n - 1:
            out.append(f"    #[fsm(terminal)] S{i}(u64),")
        else:
            init = "initial, " if i == 0 else ""
            targets = f"S{i+1} | F{i}" if i in branches(n) else f"S{i+1}"
            out.append(f"    #[fsm({init}on(t{i} => {targets}))] S{i}(u64),")
    out += [f"    #[fsm(terminal(failure))] F{b}(u64)," for b in branches(n)]
    out += ["}", "use chain::*;"]
    body = ["    let m = Machine::new(S0(seed));"]
    for i in range(n - 1):
        if i in branches(n):
            body.append(f"    let m = if m.0 == SENTINEL {{ return !m.t{i}(|x| F{i}(x.0)).0 ^ {i} }} "
                        f"else {{ black_box(m.t{i}(|x| S{i+1}(x.0.wrapping_add(1)))) }};")
        else:
            body.append(f"    let m = black_box(m.t{i}(|x| S{i+1}(x.0.wrapping_add(1))));")
    body.append("    m.0")
    return "\n".join(out), "\n".join(body)


def write_package(name, items, body, deps):
    src = os.path.join(WORK, name, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(WORK, name, "Cargo.toml"), "w") as f:
        f.write(f'[package]\nname = "{name}"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
                f"[dependencies]\n{deps}\n")
    main = (f"#![allow(dead_code)]\nuse std::hint::black_box;\nconst SENTINEL: u64 = {SENTINEL};\n{items}\n"
            f"#[inline(never)]\nfn run(seed: u64) -> u64 {{\n{body}\n}}\n"
            "fn main() { println!(\"{}\", run(black_box(1))); }\n")
    with open(os.path.join(src, "main.rs"), "w") as f:
        f.write(main)


def cargo(args, env=None):
    e = dict(os.environ, CARGO_TERM_COLOR="never")
    e.update(env or {})
    return subprocess.run(["cargo"] + args, cwd=WORK, env=e, capture_output=True, text=True, check=True)


def touch(name):
    os.utime(os.path.join(WORK, name, "src", "main.rs"))


def timed_build(name):
    touch(name)
    t = time.perf_counter()
    cargo(["build", "-q", "-p", name])
    return time.perf_counter() - t


def passes(name):
    touch(name)
    r = cargo(["rustc", "-q", "-p", name, "--", "-Z", "time-passes"],
              env={"RUSTC_BOOTSTRAP": "1", "CARGO_INCREMENTAL": "0", "CARGO_TARGET_DIR": os.path.join(WORK, "target-passes")})
    found = {}
    for line in r.stderr.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "time:":
            found[parts[-1]] = float(parts[1].rstrip(";"))
    return found.get("macro_expand_crate", 0.0), found.get("total", 0.0)


def rustc_instructions(name):
    """Instructions of rustc's touch-only incremental rebuild of `name` (callgrind), and of
    the proc macros it ran."""
    touch(name)
    r = cargo(["build", "-v", "-p", name])
    line = [l for l in r.stderr.splitlines() if "Running `" in l and f"--crate-name {name}" in l][-1]
    command = line.split("Running `", 1)[1].rsplit("`", 1)[0]
    touch(name)
    out = os.path.join(WORK, f"callgrind.{name}.out")
    subprocess.run(f"valgrind --tool=callgrind --callgrind-out-file={out} {command}", shell=True,
                   cwd=WORK, capture_output=True, check=True)
    total = macros = 0
    with open(out) as f:
        for l in f:
            if l.startswith("summary:") or l.startswith("totals:"):
                total = int(l.split()[1])
                break
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True,
                               text=True).stdout
    for l in annotated.splitlines():
        if "fsm_macros::derive_fsm " in l:
            macros = int(l.split()[0].replace(",", ""))
            break
    return total, macros


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--instructions", action="store_true",
                    help="also count rustc's instructions with callgrind")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    core = os.path.join(ROOT, "fsm-core")
    write_package("hand", *hand(a.n), "")
    write_package("derived", *derived(a.n), f'fsm-core = {{ path = "{core}", default-features = false }}')
    with open(os.path.join(WORK, "Cargo.toml"), "w") as f:
        f.write('[workspace]\nmembers = ["hand", "derived"]\nresolver = "2"\n')
    for name in ("hand", "derived"):
        cargo(["build", "-q", "-p", name])
        out = subprocess.run([os.path.join(WORK, "target", "debug", name)], capture_output=True, text=True).stdout
        print(f"{name}: built, run(1) = {out.strip()}", file=sys.stderr)
    times = {"hand": [], "derived": []}
    ratios = []
    for r in range(a.rounds):
        order = ["hand", "derived"] if r % 2 == 0 else ["derived", "hand"]
        got = {name: timed_build(name) for name in order}
        for name in got:
            times[name].append(got[name])
        ratios.append(got["derived"] / got["hand"])
    shares = {}
    for name in ("hand", "derived"):
        samples = [passes(name) for _ in range(3)]
        expand = statistics.median(s[0] for s in samples)
        total = statistics.median(s[1] for s in samples)
        shares[name] = (expand, total)
    print(f"N={a.n} states in the chain ({a.n + len(branches(a.n))} states in all), {a.rounds} rounds")
    print("| code | incremental rebuild (median) | ratio | macro expansion / rustc total (debug, full) |")
    print("|---|---|---|---|")
    for name in ("hand", "derived"):
        ratio = "1" if name == "hand" else f"{statistics.median(ratios):.2f}x"
        e, t = shares[name]
        print(f"| {name} | {statistics.median(times[name]):.3f} s | {ratio} | {e:.3f} s / {t:.3f} s ({100 * e / t:.0f}%) |")
    if a.instructions:
        counted = {name: rustc_instructions(name) for name in ("hand", "derived")}
        print()
        print("| code | rustc's instructions, touch rebuild (callgrind) | of which the derive's run |")
        print("|---|---|---|")
        for name in ("hand", "derived"):
            total, macros = counted[name]
            print(f"| {name} | {total / 1e6:,.0f} M | {macros / 1e6:,.0f} M |")
        print(f"ratio: {counted['derived'][0] / counted['hand'][0]:.2f}x")


if __name__ == "__main__":
    main()
