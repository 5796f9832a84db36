#!/usr/bin/env bash
# Does a control client that never reads slow a run? Builds release, then runs a
# 1,000-spec pipeline of `true` (jobs = 2 and 4) several rounds, interleaving three
# ways: without a client, with one subscribed client that never reads, with one that
# reads everything (bench/live_client.py); prints the median wall times side by side,
# their ratio to the run without a client, and whether the lazy client was dropped
# (it never received `run_finished`). Not a test: nothing fails on a slow result.
#
#   bench/live.sh                   # jobs = 2 and 4, 5 rounds
#   ROUNDS=9 JOBS=4 bench/live.sh   # more rounds, one jobs value
#   BENCH_N=3000 bench/live.sh      # a bigger pipeline
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

echo "building release…" >&2
(cd "$repo" && cargo build --release --locked --quiet)
exec python3 "$repo/bench/live.py" "$repo" "$@"
