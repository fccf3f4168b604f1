#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests marked `slurm` (make test-slurm).
# usage: scripts/local_slurm.sh start|env|stop
#
#   scripts/local_slurm.sh start    # installs Debian's slurmctld, slurmd, slurm-client and munge if
#                                   # missing (as root), starts munged, slurmctld and slurmd, waits
#                                   # until `sinfo` shows the node idle
#   scripts/local_slurm.sh env      # the variables a shell needs to use it (eval "$(... env)")
#   scripts/local_slurm.sh stop     # cancels every job, ends exactly the daemons it started
#
# Everything lives in $CPT_SLURM_DIR (default /tmp/cpt-slurm): its own munge key and socket, a
# slurm.conf for this node (proctrack/linuxproc, task/none: no cgroups), state, logs and PIDs.
# SLURM has no accounting here (no slurmdbd), so `sacct` would fail and submitit would wait forever
# on a job that died without a result: bin/sacct answers in its place from the controller
# (`scontrol show job`) and the job completion log (jobcomp/filetxt). A user's own cluster needs
# none of this.
set -euo pipefail

DIR=${CPT_SLURM_DIR:-/tmp/cpt-slurm}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf

env_lines() {
    echo "export SLURM_CONF=$CONF"
    echo "export PATH=$DIR/bin:\$PATH"
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sinfo munged; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || { echo "error: SLURM is not installed and this is not root" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{state,spool,log,run,bin,munge}
    chmod 700 "$DIR/munge"
    [ -f "$DIR/munge/munge.key" ] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    local cpus mem
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    cat >"$CONF" <<EOF
ClusterName=cpt-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldPort=${CPT_SLURMCTLD_PORT:-16817}
SlurmdPort=${CPT_SLURMD_PORT:-16818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    install -m 755 "$(dirname "$0")/local_slurm_sacct.py" "$DIR/bin/sacct"
    sed -i "1s|.*|#!$(command -v python3)|" "$DIR/bin/sacct"
}

wait_idle() {
    for _ in $(seq 1 60); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        case "$state" in
            idle*) return 0 ;;
            down*|drain*) SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    echo "error: the node did not become idle; see $DIR/log" >&2
    return 1
}

start() {
    install_packages
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        echo "already running ($DIR)"; env_lines; return
    fi
    write_config
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munge.seed"
    export SLURM_CONF=$CONF
    # each daemon in its own session, in the foreground of it (-D), its PID recorded
    setsid slurmctld -D -i -f "$CONF" >>"$DIR/log/slurmctld.out" 2>&1 &
    echo $! >"$DIR/run/slurmctld.daemon"
    setsid slurmd -D -f "$CONF" >>"$DIR/log/slurmd.out" 2>&1 &
    echo $! >"$DIR/run/slurmd.daemon"
    wait_idle
    echo "SLURM is up: $(sinfo -h -o '%P %D %t %c CPUs')"
    env_lines
}

stop() {
    export SLURM_CONF=$CONF
    if [ -f "$CONF" ]; then
        scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
    fi
    for name in slurmd slurmctld; do
        pid_file="$DIR/run/$name.daemon"
        [ -f "$pid_file" ] || continue
        pid=$(cat "$pid_file")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pid_file"
    done
    if [ -f "$DIR/run/munged.pid" ]; then
        pid=$(cat "$DIR/run/munged.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        rm -f "$DIR/run/munged.pid"
    fi
    echo "SLURM stopped ($DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) env_lines ;;
    -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
