#!/usr/bin/env bash
# The Slurm workload, side by side: 200 trivial specs through `backend = "slurm"`
# versus the same 200 jobs submitted by a plain shell loop of `sbatch`, on the same
# cluster, each timed from the first submission until every job has ended. Starts a
# one-node cluster with .ci/slurm-up.sh when none answers (and stops it afterwards).
# Not a test: nothing fails on a slow result.
#
#   bench/slurm.sh                  # 200 jobs, 3 rounds
#   JOBS=500 ROUNDS=5 bench/slurm.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
started_here=0
if ! sinfo -h >/dev/null 2>&1; then
    "$repo/.ci/slurm-up.sh"
    started_here=1
fi
cleanup() { [ "$started_here" = 1 ] && "$repo/.ci/slurm-down.sh"; }
trap cleanup EXIT
if [ -z "${BENCH_SPEC_RUNNER:-}" ]; then
    echo "building release…" >&2
    (cd "$repo" && cargo build --release --locked --quiet)
    BENCH_SPEC_RUNNER="$repo/target/release/spec-runner"
fi
export BENCH_SPEC_RUNNER
python3 "$repo/bench/slurm.py"
