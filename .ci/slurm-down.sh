#!/usr/bin/env bash
# Stops what `.ci/slurm-up.sh` started: cancels every job first (their slurmstepd
# outlive the daemons), then SIGTERMs slurmd, slurmctld and munged by their pid files.
# Does nothing for a cluster it did not start.
set -uo pipefail

dir=${SPEC_RUNNER_SLURM_DIR:-/tmp/spec-runner-slurm}
say() { echo "slurm-down: $*" >&2; }
sudo=()
[ "$(id -u)" != 0 ] && sudo=(sudo -n)

[ -e "$dir/started" ] || exit 0

"${sudo[@]}" scancel --user="$(id -un)" >/dev/null 2>&1
for _ in $(seq 100); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.1
done

stop() { # name pidfile
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    "${sudo[@]}" kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "$1 (pid $pid) did not stop in 10 s; killing it"
    "${sudo[@]}" kill -KILL "$pid" 2>/dev/null
}
stop slurmd "$dir/slurmd.pid"
stop slurmctld "$dir/slurmctld.pid"
if [ -e "$dir/munged.pid.ours" ]; then
    stop munged /run/munge/munged.pid
    rm -f "$dir/munged.pid.ours"
fi
rm -f "$dir/started"
say "cluster stopped"
