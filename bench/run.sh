#!/usr/bin/env bash
# The side-by-side benchmark: builds release, then runs each workload several times,
# interleaving spec-runner with xargs -P2, GNU parallel -j2 and the two floors (a minimal
# Rust program that spawns the same commands on 2 threads: the bare floor discards the
# output, the logging floor first creates the spec's log folder and task_1.log per job
# and puts stdout and stderr on that file), and prints medians, both ratios and peak RSS.
# Not a test: nothing fails on a slow result. GNU parallel is left out (with a note)
# when it is absent and cannot be installed.
#
#   bench/run.sh                 # every workload
#   bench/run.sh W1 W4           # some
#   ROUNDS=3 bench/run.sh        # fewer rounds
#   BENCH_DIR=/dev/shm bench/run.sh   # run on another filesystem
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v parallel >/dev/null || need+=(parallel)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian…" >&2
    (apt-get install -y "${need[@]}" >/dev/null 2>&1) ||
        (apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null) ||
        echo "could not install ${need[*]}; going on without" >&2
fi
[ -x /usr/bin/time ] || { echo "bench/run.sh needs /usr/bin/time (Debian package time)" >&2; exit 1; }

echo "building release…" >&2
(cd "$repo" && cargo build --release --locked --quiet)
mkdir -p "$repo/target/bench"
rustc -O --edition 2021 -o "$repo/target/bench/floor" "$repo/bench/floor.rs"
exec python3 "$repo/bench/bench.py" "$repo" "$@"
