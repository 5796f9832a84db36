#!/usr/bin/env python3
"""A control-socket client for bench/live.py: `live_client.py lazy|reader SOCKET`.

Prints `ready` once started, then waits for SOCKET to appear, connects and subscribes.
`lazy` never reads while the run goes on: it waits for its stdin to close (the
benchmark closes it once the run has exited), then reads what the socket still holds.
`reader` reads every line as it comes. Both end by printing one JSON line: how many
lines they received and whether `run_finished` was among them.
"""

import json
import os
import socket
import sys
import time

mode, path = sys.argv[1], sys.argv[2]
print("ready", flush=True)
deadline = time.monotonic() + 60
while True:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        break
    except OSError:
        s.close()
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the socket never served"}), flush=True)
            sys.exit(1)
        time.sleep(0.001)
s.sendall(b'{"v":1,"id":1,"op":"subscribe"}\n')
if mode == "lazy":
    sys.stdin.read()  # never touches the socket while the run goes on
s.settimeout(30)
data = bytearray()
while True:
    try:
        chunk = s.recv(1 << 16)
    except OSError:  # a reset once dropped: what was read is all there is
        break
    if not chunk:
        break
    data += chunk

def parse(line):
    try:
        return json.loads(line)
    except ValueError:  # a dropped client's last line may be cut
        return None


raw = data.split(b"\n")
lines = [e for e in map(parse, raw) if isinstance(e, dict)]
print(json.dumps({
    "lines": len(lines),
    # The subscription's reply (the snapshot) comes first; it may be the cut line.
    "subscribed": b'"ok":true' in raw[0][:200],
    "run_finished": any(e.get("event") == "run_finished" for e in lines),
}), flush=True)
