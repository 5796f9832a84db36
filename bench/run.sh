#!/usr/bin/env bash
# The side-by-side benchmark: builds release, then runs each workload several times,
# interleaving spec-runner with xargs -P2, GNU parallel -j2 and the floor (a minimal
# Rust program that spawns the same commands on 2 threads), and prints medians and
# ratios. Not a test: nothing fails on a slow result.
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
    (apt-get install -y "${need[@]}" >/dev/null 2>&1) || (apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null)
fi

echo "building release…" >&2
(cd "$repo" && cargo build --release --locked --quiet)
mkdir -p "$repo/target/bench"
rustc -O --edition 2021 -o "$repo/target/bench/floor" "$repo/bench/floor.rs"
exec python3 "$repo/bench/bench.py" "$repo" "$@"
