#!/usr/bin/env python3
"""Does a control client that never reads slow a run? (see bench/live.sh, which builds
and calls this).

For each `jobs` value, a pipeline of BENCH_N specs running `true` runs ROUNDS times in
each of three ways, in a shuffled order within a round: without a client; with one
client subscribed that never reads; with one client subscribed that reads every event.
A client starts (and prints `ready`) before the timed run starts, so its interpreter's
start-up is not counted; the wall time is the `apply` process's, from spawn to exit.
Prints the medians, their ratio to the run without a client, and whether the lazy
client was dropped (it never received `run_finished`).
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = sys.argv[1]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
N = int(os.environ.get("BENCH_N", "1000"))
JOBS = [int(j) for j in os.environ.get("JOBS", "2 4").split()]
BIN = os.path.join(REPO, "target/release/spec-runner")
CLIENT = os.path.join(REPO, "bench/live_client.py")
WORK = tempfile.mkdtemp(prefix="sr-live-", dir=os.environ.get("BENCH_DIR"))

NONE, LAZY, READER = "no client", "a client that never reads", "a client that reads"


def one(d, client):
    """One run: (wall seconds, the client's report or None)."""
    state = os.path.join(d, ".spec-runner")
    shutil.rmtree(state, ignore_errors=True)
    c = None
    if client:
        mode = "lazy" if client == LAZY else "reader"
        c = subprocess.Popen([sys.executable, CLIENT, mode, os.path.join(state, "control.sock")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert c.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    r = subprocess.run([BIN, "-f", os.path.join(d, "p.toml"), "apply", "-q", "--progress", "none"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"apply failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    report = None
    if c:
        out, _ = c.communicate("", timeout=120)
        report = json.loads(out.strip().splitlines()[-1])
        if "error" in report or not report["subscribed"]:
            sys.exit(f"{client}: did not subscribe before the run ended: {report}")
    return wall, report


def bench(jobs):
    d = os.path.join(WORK, f"j{jobs}")
    os.makedirs(d)
    with open(os.path.join(d, "p.toml"), "w") as f:
        f.write(f"jobs = {jobs}\n")
        for i in range(N):
            f.write(f'[specs.s{i:04}]\ncommand = ["true"]\n')
    res = {NONE: [], LAZY: [], READER: []}
    for r in range(ROUNDS):
        order = list(res)
        random.shuffle(order)
        for name in order:
            res[name].append(one(d, name if name != NONE else None))
        print(f"  jobs = {jobs}: round {r + 1}/{ROUNDS} done", file=sys.stderr)
    base = statistics.median(w for w, _ in res[NONE])
    print(f"\n### {N} specs running `true`, jobs = {jobs}, {ROUNDS} rounds\n")
    print("| run | median wall | × no client | min – max | the client |")
    print("|---|---|---|---|---|")
    for name, runs in res.items():
        walls = [w for w, _ in runs]
        med = statistics.median(walls)
        if name == NONE:
            what = ""
        else:
            reports = [rep for _, rep in runs]
            finished = sum(rep["run_finished"] for rep in reports)
            lines = statistics.median(rep["lines"] for rep in reports)
            what = (f"saw `run_finished` in {finished}/{len(runs)} runs, "
                    f"{lines:.0f} lines (median)")
            if name == LAZY:
                what = ("dropped in every run, " if finished == 0 else
                        f"**not dropped in {finished}/{len(runs)} runs**, ") + \
                       f"{lines:.0f} lines received (median)"
        print(f"| {name} | {med:.3f} s | {med / base:.3f} | {min(walls):.3f} – {max(walls):.3f} s | {what} |")
    return res


def main():
    print(f"# Control socket: a client that never reads ({N} specs; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start)")
    for jobs in JOBS:
        bench(jobs)
    print(f"\n(load average {os.getloadavg()[0]:.2f} at the end)")
    shutil.rmtree(WORK, ignore_errors=True)


main()
