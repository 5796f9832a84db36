#!/usr/bin/env python3
"""Side-by-side benchmark of spec-runner (see bench/run.sh, which builds and calls this).

Each workload runs ROUNDS times; within a round the contenders run in a shuffled order,
so that a noisy moment of the machine does not land on one contender only. Prints the
median wall time (and peak RSS where it matters) of each, and its ratio to the baseline.
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
from datetime import datetime

REPO = sys.argv[1]
WANTED = [a.upper() for a in sys.argv[2:]] or ["W1", "W2", "W3", "W4", "W5", "W6"]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
N = int(os.environ.get("BENCH_N", "10000"))
BIN = os.path.join(REPO, "target/release/spec-runner")
FLOOR = os.path.join(REPO, "target/bench/floor")
LOG_FLOOR = "logging floor"
BARE_FLOOR = "bare floor"
WORK = tempfile.mkdtemp(prefix="spec-runner-bench-", dir=os.environ.get("BENCH_DIR"))


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=False, **kw)


GRAVE = os.path.join(WORK, "retired")


def retire(path):
    """Moves a run's files out of the way instead of deleting them: ext4 skips the inodes
    of recently deleted files when it allocates new ones (`recently_deleted`, for up to
    5 minutes), so deleting 6,000 inodes just before a run would charge whoever runs
    next for the previous contender's clean-up. Everything retired is deleted at the end."""
    if os.path.lexists(path):
        os.makedirs(GRAVE, exist_ok=True)
        os.rename(path, tempfile.mkdtemp(dir=GRAVE))


class Run(tuple):
    """(wall seconds, peak RSS KiB), with `.cpu`: user + system seconds, children included.
    CPU time barely moves with the machine's load; wall time does."""

    def __new__(cls, wall, rss, cpu):
        run = super().__new__(cls, (wall, rss))
        run.cpu = cpu
        return run


def timed(cmd, prepare=None, cwd=WORK):
    """Runs a shell command under /usr/bin/time; returns a Run."""
    if prepare:
        prepare()
    rss_file = os.path.join(WORK, ".rss")
    start = time.perf_counter()
    r = sh(f"/usr/bin/time -o {rss_file} -f '%M %U %S' {cmd}", cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if r.returncode not in (0, 1):
        sys.exit(f"benchmark command failed ({r.returncode}): {cmd}\n{r.stderr.decode()[-2000:]}")
    with open(rss_file) as f:
        rss, user, system = f.read().strip().splitlines()[-1].split()
    return Run(wall, int(rss), float(user) + float(system))


def rounds(contenders):
    """contenders: {name: (cmd, prepare)} → {name: [(wall, rss)…]}"""
    results = {name: [] for name in contenders}
    for r in range(ROUNDS):
        order = list(contenders)
        random.shuffle(order)
        for name in order:
            cmd, prepare = contenders[name]
            results[name].append(timed(cmd, prepare))
        print(f"  round {r + 1}/{ROUNDS} done", file=sys.stderr)
    return results


def table(title, results, baseline, rss=True, extra=None, also=(), cpu=False):
    """One row per contender: median wall, its ratio to `baseline` and to each of `also`;
    with `cpu`, the median CPU time (user + system, children included) and its ratio to
    the baseline's."""
    print(f"\n### {title}\n")
    bases = [baseline, *also]
    base = {b: statistics.median(w for w, _ in results[b]) for b in bases}
    base_cpu = statistics.median(r.cpu for r in results[baseline]) if cpu else None
    head = ("| contender | median wall |" + "".join(f" × {b} |" for b in bases)
            + (f" median CPU | CPU × {baseline} |" if cpu else "") + (" peak RSS |" if rss else ""))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        peak = max(m for _, m in runs)
        row = f"| {name} | {wall:.3f} s |" + "".join(f" {wall / base[b]:.2f} |" for b in bases)
        if cpu:
            c = statistics.median(r.cpu for r in runs)
            row += f" {c:.2f} s | {c / base_cpu:.2f} |"
        if rss:
            row += f" {peak / 1024:.1f} MiB |"
        print(row)
    if extra:
        print(extra)


def pipeline(path, specs, header="jobs = 2\n"):
    with open(path, "w") as f:
        f.write(header)
        for name, command in specs:
            f.write(f"[specs.{name}]\ncommand = {json.dumps(command)}\n")


def fresh_state(d):
    return lambda: retire(os.path.join(d, ".spec-runner"))


def spawn_workload(title, command_toml, floor_line, xargs_cmd, parallel_cmd):
    d = os.path.join(WORK, title)
    os.makedirs(d, exist_ok=True)
    pipeline(os.path.join(d, "p.toml"), [(f"s{i:06}", command_toml) for i in range(N)])
    with open(os.path.join(d, "cmds.tsv"), "w") as f:
        f.write((floor_line + "\n") * N)
    with open(os.path.join(d, "nums.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in range(N)))
    logs = os.path.join(d, "floor-logs")

    def fresh_logs():
        retire(logs)
        os.makedirs(logs)

    contenders = {
        "spec-runner apply": (f"{BIN} -f {d}/p.toml apply -q --progress none", fresh_state(d)),
        LOG_FLOOR: (f"{FLOOR} log 2 {d}/cmds.tsv {logs}", fresh_logs),
        BARE_FLOOR: (f"{FLOOR} 2 {d}/cmds.tsv", None),
        "xargs -P2": (f"xargs -P2 -n1 -a {d}/nums.txt {xargs_cmd}", None),
    }
    if shutil.which("parallel"):
        contenders["GNU parallel -j2"] = (f"parallel -j2 -a {d}/nums.txt {parallel_cmd}", None)
    else:
        print("(GNU parallel not installed: left out)", file=sys.stderr)
    res = rounds(contenders)
    retire(logs)
    fresh_state(d)()
    return res


def w1():
    res = spawn_workload("W1", ["true"], "true", "true", "true")
    table(f"W1: {N} specs running `true` (argv), jobs = 2", res, LOG_FLOOR, also=(BARE_FLOOR,), cpu=True)


def w2():
    res = spawn_workload("W2", "true", "sh\t-c\ttrue", "sh -c true", "sh -c true")
    table(f"W2: {N} specs running `sh -c true`, jobs = 2", res, LOG_FLOOR, also=(BARE_FLOOR,), cpu=True)


def w3():
    size = int(os.environ.get("W3_BYTES", str(1 << 30)))
    d = os.path.join(WORK, "W3")
    os.makedirs(d, exist_ok=True)
    pipeline(os.path.join(d, "p.toml"), [("flood", ["head", "-c", str(size), "/dev/zero"])])

    def clean():
        shutil.rmtree(os.path.join(d, ".spec-runner"), ignore_errors=True)
        for f in ("direct.out",):
            try:
                os.remove(os.path.join(d, f))
            except FileNotFoundError:
                pass
        # The previous run's gigabyte is still being written back, and its pages are
        # still cached: without this, the next contender competes with both. Dropping
        # the page cache needs root; without it, only the sync.
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        except OSError:
            pass

    res = rounds({
        "spec-runner apply (log)": (f"{BIN} -f {d}/p.toml apply -q --progress none", clean),
        "head > file (direct)": (f"sh -c 'head -c {size} /dev/zero > {d}/direct.out'", clean),
    })
    clean()
    mib = size / (1 << 20)
    lines = ["", "| contender | throughput |", "|---|---|"]
    for name, runs in res.items():
        lines.append(f"| {name} | {mib / statistics.median(w for w, _ in runs):.0f} MiB/s |")
    table(f"W3: one spec writing {mib:.0f} MiB to stdout", res, "head > file (direct)", extra="\n".join(lines))


def w4():
    m = int(os.environ.get("W4_SPECS", "200"))
    d = os.path.join(WORK, "W4")
    os.makedirs(os.path.join(d, "stamps"), exist_ok=True)
    pipeline(os.path.join(d, "p.toml"), [(f"s{i:04}", [FLOOR, "stamp", f"{d}/stamps/s{i:04}"]) for i in range(m)],
             header="jobs = 1\n")
    lat = []
    for _ in range(max(1, ROUNDS // 2)):
        fresh_state(d)()
        out = subprocess.run([BIN, "-f", f"{d}/p.toml", "apply", "--format", "json"], capture_output=True, check=True).stdout
        for line in out.decode().splitlines():
            e = json.loads(line)
            if e["event"] != "attempt_finished":
                continue
            ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
            seen_ns = int(ts.timestamp()) * 10**9 + ts.microsecond * 1000
            with open(f"{d}/stamps/{e['spec']}") as f:
                exit_ns = int(f.read())
            lat.append((seen_ns - exit_ns) / 1e6)
    lat.sort()
    print(f"\n### W4: exit-to-notice latency ({len(lat)} attempts)\n")
    print("| median | p90 | max |\n|---|---|---|")
    print(f"| {statistics.median(lat):.3f} ms | {lat[int(len(lat) * 0.9)]:.3f} ms | {lat[-1]:.3f} ms |")
    print("\n(from the child writing its exit timestamp, just before it exits, to the runner's "
          "`attempt_finished` event; includes the child's own exit)")


def gen_big(path, n):
    lines = ["jobs = 8", "retry_max_retries = 2", "[[retry_rules]]", "exit_codes = [64]", 'action = "fail"']
    for i in range(n):
        lines.append(f"[specs.s{i:06}]")
        lines.append(f'command = "echo {i}"')
        if i % 10:
            lines.append(f'depends_on = ["s{i - i % 10:06}"]')
        if i % 7 == 0:
            lines.append("retry_max_retries = 5")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def w5():
    d = os.path.join(WORK, "W5")
    os.makedirs(d, exist_ok=True)
    rows = []
    per_spec = {}
    for n in (1000, 100000):
        p = os.path.join(d, f"p{n}.toml")
        gen_big(p, n)
        res = rounds({
            "plan --format json": (f"sh -c '{BIN} -f {p} plan --format json > /dev/null'", None),
            "validate": (f"sh -c '{BIN} -f {p} validate > /dev/null'", None),
            "python tomllib → json (baseline)": (
                f"python3 -c 'import tomllib,json,sys; json.dumps(tomllib.load(open(sys.argv[1],\"rb\")))' {p}", None),
        })
        for name, runs in res.items():
            wall = statistics.median(w for w, _ in runs)
            rows.append(f"| {n} | {name} | {wall * 1000:.1f} ms | {wall / n * 1e6:.2f} µs |")
            per_spec[(n, name)] = wall / n
    print("\n### W5: plan and validate\n")
    print("| specs | command | median | per spec |\n|---|---|---|---|")
    print("\n".join(rows))
    growth = per_spec[(100000, "plan --format json")] / per_spec[(1000, "plan --format json")]
    print(f"\nper-spec cost of `plan` at 100,000 specs ÷ at 1,000: {growth:.2f} (1.0 = linear)")


def w6():
    n = int(os.environ.get("W6_SPECS", "1000"))
    d = os.path.join(WORK, "W6")
    os.makedirs(d, exist_ok=True)
    specs = [(f"s{i:05}", ["false"]) for i in range(n)]
    pipeline(os.path.join(d, "first.toml"), specs, header="jobs = 2\nretry_max_retries = 0\n")
    pipeline(os.path.join(d, "retry.toml"), specs, header="jobs = 2\nretry_max_retries = 2\nretry_backoff_seconds = 0\n")
    res = rounds({
        "first attempts only": (f"{BIN} -f {d}/first.toml apply -q --progress none", fresh_state(d)),
        "with 2 retries each": (f"{BIN} -f {d}/retry.toml apply -q --progress none", fresh_state(d)),
    })
    first = statistics.median(w for w, _ in res["first attempts only"])
    both = statistics.median(w for w, _ in res["with 2 retries each"])
    per_first = first / n
    per_retry = (both - first) / (2 * n)
    table(f"W6: {n} specs of `false`", res, "first attempts only", extra=(
        f"\nper first attempt: {per_first * 1000:.3f} ms; per retry: {per_retry * 1000:.3f} ms; "
        f"ratio {per_retry / per_first:.2f}"))


def link_order_coverage():
    """How much of build/link-order.txt the binary has (see build.rs): names go stale
    when the code or the compiler changes, and the code of a run spreads out again."""
    order = os.path.join(REPO, "build", "link-order.txt")
    try:
        wanted = set(open(order).read().split())
        nm = subprocess.run(["nm", "--defined-only", BIN], capture_output=True, text=True).stdout
    except OSError:
        return "link order: not checked"
    have = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    found = len(wanted & have)
    note = "" if found >= 0.9 * len(wanted) else "; stale: run bench/link-order.sh"
    return f"link order: {found} of {len(wanted)} functions found{note}"


def main():
    print(f"spec-runner benchmark — {datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} CPUs, "
          f"{ROUNDS} rounds, work dir {WORK}; {link_order_coverage()}")
    try:
        for w in WANTED:
            print(f"{w}…", file=sys.stderr)
            globals()[w.lower()]()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


main()
