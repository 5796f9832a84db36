"""The Slurm workload (see bench/slurm.sh): spec-runner's Slurm backend against a plain
`sbatch` loop, interleaved rounds, medians of jobs per second."""

import os
import shutil
import statistics
import subprocess
import tempfile
import time

JOBS = int(os.environ.get("JOBS", "200"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
POLL = float(os.environ.get("POLL", "0.2"))
BIN = os.environ["BENCH_SPEC_RUNNER"]


def wait_ended(ids):
    """Polls squeue (every POLL seconds, like the backend) until no id is queued or running."""
    ids = ",".join(ids)
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ids, "-o", "%T"],
            capture_output=True, text=True,
        ).stdout.split()
        if not any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in out):
            return
        time.sleep(POLL)


def plain_loop(work):
    logs = os.path.join(work, "loop")
    os.makedirs(logs)
    start = time.monotonic()
    ids = []
    for i in range(JOBS):
        out = subprocess.run(
            ["sbatch", "--parsable", f"--output={logs}/{i}.log", "--wrap", "true"],
            capture_output=True, text=True, check=True,
        ).stdout
        ids.append(out.strip().split(";")[0])
    wait_ended(ids)
    return time.monotonic() - start


def backend(work):
    d = os.path.join(work, "runner")
    os.makedirs(d)
    with open(os.path.join(d, "spec-runner.toml"), "w") as f:
        f.write(f'backend = "slurm"\njobs = {JOBS}\nslurm = {{ poll_interval_seconds = {POLL} }}\n')
        for i in range(JOBS):
            f.write(f'[specs.s{i:04d}]\ncommand = "true"\n')
    start = time.monotonic()
    subprocess.run([BIN, "apply", "--progress", "none"], cwd=d, check=True)
    return time.monotonic() - start


def main():
    results = {"sbatch loop": [], "spec-runner": []}
    for r in range(ROUNDS):
        for name, fn in (("sbatch loop", plain_loop), ("spec-runner", backend)):
            work = tempfile.mkdtemp(prefix="slurm-bench-")
            try:
                secs = fn(work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            results[name].append(secs)
            print(f"round {r + 1}: {name}: {secs:.2f} s ({JOBS / secs:.1f} jobs/s)", flush=True)
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()
    print(f"\n{JOBS} trivial jobs, {ROUNDS} rounds, poll {POLL}s, node CPUs {','.join(cpus)}")
    print(f"{'':14} {'median s':>9} {'jobs/s':>8}")
    base = statistics.median(results["sbatch loop"])
    for name, vals in results.items():
        m = statistics.median(vals)
        print(f"{name:14} {m:9.2f} {JOBS / m:8.1f}")
    m = statistics.median(results["spec-runner"])
    print(f"spec-runner / loop throughput: {base / m:.2f}x")


main()
