#!/usr/bin/env bash
# Instructions per run of the typestate chain (benches/typestate.rs), hand-written against
# derived, counted by callgrind (deterministic for a given binary). When the compiler emits
# byte-identical machine code for both, the two symbols share one address, and the script
# says so: the counts are then the same by construction.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=1000
steps=9
bin=$(cargo bench --bench typestate --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "typestate" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/$1" --toggle-collect="$1" "$bin" count "$calls" >/dev/null 2>&1
    grep -E '^summary:' "$out/$1" | awk '{print $2}'
}
address() { nm "$bin" | awk -v f="$1" '$3 == f {print $1}'; }
printf '%-8s %-14s %-14s %10s %10s  %s\n' build hand derived "hand Ir" "derived Ir" "per step (hand / derived)"
for build in opaque folded; do
    hand="fsm_hand_$build"
    derived="fsm_derived_$build"
    hand_ir=$(count "$hand")
    if [ "$(address "$hand")" = "$(address "$derived")" ]; then
        derived_ir=$hand_ir
        note="identical machine code (one address)"
    else
        derived_ir=$(count "$derived")
        note="different code"
    fi
    python3 -c "h=$hand_ir/$calls; d=$derived_ir/$calls; print(f'{\"$build\":<8} {\"$(address "$hand")\":<14} {\"$(address "$derived")\":<14} {h:>10.1f} {d:>10.1f}  {h/$steps:.2f} / {d/$steps:.2f}; $note')"
done
