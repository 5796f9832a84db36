#!/usr/bin/env python3
"""CPU time per thread of one command, by thread name: where a runner's own time goes.

    python3 bench/threads.py target/release/spec-runner -f p.toml apply -q --progress none

Samples /proc/<pid>/task/*/stat every 50 ms while the command runs and prints each
thread name's user and system time as last seen (a thread that ends between samples
loses its last 50 ms). Children (the specs' commands) are not counted. Not a test."""

import os
import subprocess
import sys
import time

cmd = sys.argv[1:]
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
last = {}
tck = os.sysconf('SC_CLK_TCK')
while p.poll() is None:
    try:
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            try:
                st = open(f"/proc/{p.pid}/task/{tid}/stat").read()
                comm = st[st.index('(')+1:st.rindex(')')]
                f = st[st.rindex(')')+2:].split()
                last[tid] = (comm, int(f[11]), int(f[12]))
            except OSError:
                pass
    except OSError:
        pass
    time.sleep(0.05)
agg = {}
for comm, u, s in last.values():
    a = agg.setdefault(comm, [0, 0]); a[0] += u; a[1] += s
for comm, (u, s) in sorted(agg.items(), key=lambda x: -(x[1][0]+x[1][1])):
    print(f"{comm:14s} user {u/tck:6.2f} s  sys {s/tck:6.2f} s")
