#!/usr/bin/env bash
# Times `plan --format json` and `validate` on generated 1,000- and 100,000-spec
# pipelines, beside a baseline that only parses the same TOML and writes JSON
# (Python's tomllib + json), and prints the medians.
#
#   bench/plan.sh              # both sizes
#   SIZES="1000" bench/plan.sh # one size
#
# Needs hyperfine (apt-get install -y hyperfine) and python3 ≥ 3.11. Builds the
# release binary first. Not a test: nothing here fails on a slow result.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sizes="${SIZES:-1000 100000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v hyperfine >/dev/null || {
    echo "bench/plan.sh needs hyperfine: apt-get install -y hyperfine" >&2
    exit 2
}

# The interpreter itself, not a version manager's shim (pyenv's adds ~100 ms).
py="$(python3 -c 'import sys; print(sys.executable)')"

echo "building release…" >&2
(cd "$repo" && cargo build --release --quiet)
bin="$repo/target/release/spec-runner"

# A pipeline of N specs that looks like real ones: chains of dependencies (so there
# are many waves), per-spec overrides, env tables with a secret, rules globally and
# on some specs, a config.json beside it.
gen() {
    python3 - "$1" "$2" <<'PY'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
lines = [
    "#:schema ./schema/spec-runner.schema.json",
    "jobs = 8",
    "retry_max_retries = 2",
    'activity_timeout_seconds = "10m"',
    "",
    "[[retry_rules]]",
    "exit_codes = [64]",
    'action = "fail"',
    "",
    "[[retry_rules]]",
    "output = '(?i)\\brate limit(ed)?\\b|429 Too Many Requests'",
    'action = "retry"',
    "backoff_seconds = 60",
    "",
]
for i in range(n):
    name = f"spec-{i:06d}"
    lines.append(f"[specs.{name}]")
    if i % 3 == 0:
        lines.append(f'command = ["claude", "--print", "Implement the next task of {name}"]')
    else:
        lines.append(f"command = \"cargo test -p crate{i % 97} -- --nocapture\"")
    if i % 10:
        # Chains of ten: each depends on the one before it.
        lines.append(f'depends_on = ["spec-{i - 1:06d}"]')
    if i % 4 == 0:
        lines.append(f'cwd = "services/s{i % 50}"')
    if i % 5 == 0:
        lines.append(f"retry_max_retries = {i % 7}")
    if i % 7 == 0:
        lines.append('timeout_seconds = "2h"')
    if i % 11 == 0:
        lines.append('env = { RUST_LOG = "info", API_TOKEN = "secret" }')
    if i % 13 == 0:
        lines += ["", f"[[specs.{name}.retry_rules]]", 'signals = ["SIGSEGV"]', 'action = "retry"']
    lines.append("")
with open(out, "w") as f:
    f.write("\n".join(lines))
PY
}

median() { # hyperfine JSON → median wall time of command $2, in ms
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.1f" % (r["median"]*1000))' "$1" "$2"
}

cpu() { # hyperfine JSON → mean user + system time of command $2, in ms
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.1f" % ((r["user"]+r["system"])*1000))' "$1" "$2"
}

# Wall-clock medians, and in brackets the CPU time (user + system): on a shared
# machine the CPU time moves less with the neighbours' load.
printf '\n%-8s %22s %22s %22s %15s\n' specs "plan --format json" validate "baseline (python)" "plan json/spec"
results=()
for n in $sizes; do
    dir="$work/$n"
    mkdir -p "$dir"
    gen "$n" "$dir/spec-runner.toml"
    printf '{"retry_backoff_seconds": 1, "retry_max_backoff_seconds": 30, "repos_root": "~"}\n' >"$dir/config.json"
    # Fewer runs where one run takes seconds.
    if [ "$n" -ge 10000 ]; then runs=(--warmup 1 --runs 5); else runs=(--warmup 5 --min-runs 30); fi
    "$bin" -f "$dir/spec-runner.toml" validate >/dev/null 2>&1 || {
        echo "generated pipeline of $n specs does not validate:" >&2
        "$bin" -f "$dir/spec-runner.toml" validate >&2
        exit 1
    }
    hyperfine --style none --shell none "${runs[@]}" --export-json "$dir/h.json" \
        --output null \
        "$bin -f $dir/spec-runner.toml plan --format json" \
        "$bin -f $dir/spec-runner.toml validate" \
        "$py -c 'import tomllib,json,sys; json.dumps(tomllib.load(open(sys.argv[1],\"rb\")))' $dir/spec-runner.toml" \
        >"$dir/h.log" 2>&1 || { cat "$dir/h.log" >&2; exit 1; }
    plan=$(median "$dir/h.json" 0)
    val=$(median "$dir/h.json" 1)
    base=$(median "$dir/h.json" 2)
    per=$(python3 -c "print(f'{$plan*1000/$n:.1f} µs')")
    printf '%-8s %22s %22s %22s %15s\n' "$n" \
        "$plan ms ($(cpu "$dir/h.json" 0) cpu)" \
        "$val ms ($(cpu "$dir/h.json" 1) cpu)" \
        "$base ms ($(cpu "$dir/h.json" 2) cpu)" "$per"
    results+=("$n:$plan")
done

# Linear scaling: time per spec at the largest size against the smallest.
if [ "${#results[@]}" -ge 2 ]; then
    python3 - "${results[@]}" <<'PY'
import sys
pts = [(int(a), float(b)) for a, b in (r.split(":") for r in sys.argv[1:])]
(n0, t0), (n1, t1) = pts[0], pts[-1]
print(f"\n{n1 // n0}× the specs took {t1 / t0:.1f}× the time (linear would be {n1 // n0}×, "
      f"less with the fixed start-up cost)")
PY
fi
echo "target: 1,000 specs ≤ 30 ms"
