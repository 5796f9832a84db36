#!/usr/bin/env bash
# Remakes build/link-order.txt, the functions a run executes, which release builds
# place together (see build.rs and docs/PERFORMANCE.md, "Memory: the code a run
# maps"). Needs root and 5-10 minutes (a release build and an instrumented one). Run it
# when the list has gone stale (bench/run.sh prints how much of it the release binary
# still has), then rebuild.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec python3 "$repo/bench/link_order.py" "$repo"
