#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the Slurm backend's tests
# (docs/SLURM.md). Installs `slurm-wlm munge` with apt-get when missing, writes
# /etc/slurm/slurm.conf with its state under $SPEC_RUNNER_SLURM_DIR, and starts munged,
# slurmctld and slurmd without systemd. `.ci/slurm-down.sh` stops what this started.
# A cluster that is already reachable (`sinfo` answers) is used as it is.
set -euo pipefail

dir=${SPEC_RUNNER_SLURM_DIR:-/tmp/spec-runner-slurm}
conf=/etc/slurm/slurm.conf
# Advertised CPUs: more than the machine has, so trivial jobs run side by side
# (SlurmdParameters=config_overrides lets slurmd accept it).
cpus=${SPEC_RUNNER_SLURM_CPUS:-32}

say() { echo "slurm-up: $*" >&2; }

sudo=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo -n)
    else
        say "not root and no sudo: cannot install or start a cluster"
        exit 1
    fi
fi

if command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo -h >/dev/null 2>&1; then
    say "a cluster is already reachable; using it"
    exit 0
fi

if ! command -v sbatch >/dev/null 2>&1 || ! [ -x /usr/sbin/munged ]; then
    say "installing slurm-wlm and munge"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

if [ -e "$conf" ] && ! grep -q '^# written by spec-runner .ci/slurm-up.sh' "$conf"; then
    say "$conf exists and was not written by this script; leaving it alone"
else
    "${sudo[@]}" mkdir -p /etc/slurm
    "${sudo[@]}" tee "$conf" >/dev/null <<CONF
# written by spec-runner .ci/slurm-up.sh: a one-node test cluster
ClusterName=spec-runner-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=300
KillWait=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SlurmdParameters=config_overrides
NodeName=localhost CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
fi

"${sudo[@]}" mkdir -p "$dir/state" "$dir/spool"

# munge: the package's postinst made the key; the daemon needs its run folder.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    "${sudo[@]}" mkdir -p /run/munge
    "${sudo[@]}" chown munge:munge /run/munge
    if [ ! -e /etc/munge/munge.key ]; then
        "${sudo[@]}" runuser -u munge -- /usr/sbin/mungekey --create >/dev/null 2>&1 || true
    fi
    "${sudo[@]}" runuser -u munge -- /usr/sbin/munged
    cp_pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
    echo "${cp_pid}" >"$dir/munged.pid.ours"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

"${sudo[@]}" slurmctld -c
"${sudo[@]}" slurmd -N localhost
touch "$dir/started"

for _ in $(seq 300); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx 'idle'; then
        say "cluster up (state and logs in $dir)"
        exit 0
    fi
    sleep 0.1
done
say "the node did not become idle in 30 s:"
sinfo >&2 || true
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
