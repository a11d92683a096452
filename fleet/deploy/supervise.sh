#!/bin/sh
# ecufl-supervise UNIT RUNDIR: run a systemd unit's service the way systemd would, on boards (and
# test network namespaces) that have no systemd. It reads from UNIT: ExecStart, Environment,
# EnvironmentFile, WorkingDirectory, Restart (no | on-failure | always), RestartSec, Nice,
# MemoryMax and CPUQuota.
#
# Resource limits: the same kernel mechanism systemd uses, a cgroup of the service's own, made
# below this supervisor's cgroup (so it can only tighten what already applies): MemoryMax ->
# memory.max (cgroup v2) or memory.limit_in_bytes (v1), the kernel's OOM killer ends the service
# inside its cgroup when it goes over; CPUQuota=P% -> cpu.max "P*1000 100000" (v2) or
# cpu.cfs_quota_us/cfs_period_us (v1). Every process the service starts stays in the cgroup.
# Without a writable cgroup (not root, no cgroupfs) the log says the limits are NOT enforced.
# The sandboxing options of a unit are not honoured.
#
# Started as `setsid ecufl-supervise ...` it leads its own process group, so `kill -TERM -PGID`
# stops the service with every child it spawned (flower-supernode's superexec and clientapps).
# Files in RUNDIR: NAME.pid (this supervisor), NAME.child (the service), NAME.log (its output,
# plus one line per start and exit), NAME.restarts (how many times it was restarted),
# NAME.cgroup (the cgroup directories made for it, removed when it stops).
set -u
unit=$1
rundir=$2
name=$(basename "$unit" .service)
mkdir -p "$rundir"
log="$rundir/$name.log"

val() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
exec_start=$(val ExecStart)
restart=$(val Restart)
restart_sec=$(val RestartSec)
nice_val=$(val Nice)
work_dir=$(val WorkingDirectory)
env_file=$(val EnvironmentFile)
memory_max=$(val MemoryMax)
cpu_quota=$(val CPUQuota)
[ -n "$exec_start" ] || { echo "ecufl-supervise: $unit has no ExecStart" >&2; exit 2; }
say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ecufl-supervise: $*" >> "$log"; }

# --- resource limits -----------------------------------------------------------------------------
bytes() {  # systemd's sizes: 64M, 1G, 65536 (bytes); infinity or empty: no limit
    case "$1" in
        ''|infinity) ;;
        *[Kk]) echo $(( ${1%?} * 1024 )) ;;
        *[Mm]) echo $(( ${1%?} * 1048576 )) ;;
        *[Gg]) echo $(( ${1%?} * 1073741824 )) ;;
        *[0-9]) echo "$1" ;;
        *) echo bad ;;
    esac
}
mem_bytes=$(bytes "$memory_max")
quota_pct=${cpu_quota%%%}
[ "$mem_bytes" != bad ] || { echo "ecufl-supervise: $unit: MemoryMax=$memory_max: expected a size like 64M" >&2; exit 2; }
case "$quota_pct" in ''|*[!0-9]*) [ -z "$quota_pct" ] || { echo "ecufl-supervise: $unit: CPUQuota=$cpu_quota: expected a percentage like 80%" >&2; exit 2; } ;; esac
cg_name="ecufl-$name-$(printf '%s' "$rundir" | cksum | cut -d' ' -f1)"  # one per install root and service
cgroups=
# the mount point of a cgroup v1 controller, and this process's path in it
v1_dir() {
    m=$(awk -v c="$1" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $2; exit } }' /proc/mounts)
    p=$(awk -F: -v c="$1" '{ n = split($2, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $3; exit } }' /proc/$$/cgroup)
    [ -n "$m" ] && [ -n "$p" ] && echo "$m${p%/}/$cg_name"
}
setup_limits() {
    [ -n "$mem_bytes$quota_pct" ] || return 0
    applied=
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2 (unified)
        d="/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$$/cgroup | sed 's:/$::')/$cg_name"
        parent=${d%/*}
        for c in ${mem_bytes:+memory} ${quota_pct:+cpu}; do
            grep -qw "$c" "$parent/cgroup.subtree_control" 2>/dev/null || echo "+$c" > "$parent/cgroup.subtree_control" 2>/dev/null
        done
        if mkdir -p "$d" 2>/dev/null && { [ -z "$mem_bytes" ] || echo "$mem_bytes" > "$d/memory.max"; } 2>/dev/null &&
           { [ -z "$quota_pct" ] || echo "$((quota_pct * 1000)) 100000" > "$d/cpu.max"; } 2>/dev/null; then
            cgroups=$d
            applied="cgroup v2 $d (memory.max ${mem_bytes:-max}, cpu.max ${quota_pct:+$((quota_pct * 1000)) 100000})"
        else
            rmdir "$d" 2>/dev/null
        fi
    else  # cgroup v1: one hierarchy per controller
        if [ -n "$mem_bytes" ] && d=$(v1_dir memory) && mkdir -p "$d" 2>/dev/null &&
           echo "$mem_bytes" > "$d/memory.limit_in_bytes" 2>/dev/null; then
            cgroups="$cgroups $d"; applied="memory cgroup $d (memory.limit_in_bytes $mem_bytes)"
        fi
        if [ -n "$quota_pct" ] && d=$(v1_dir cpu) && mkdir -p "$d" 2>/dev/null &&
           echo 100000 > "$d/cpu.cfs_period_us" 2>/dev/null && echo $((quota_pct * 1000)) > "$d/cpu.cfs_quota_us" 2>/dev/null; then
            cgroups="$cgroups $d"; applied="${applied:+$applied, }cpu cgroup $d (cpu.cfs_quota_us $((quota_pct * 1000))/100000)"
        fi
    fi
    echo "$cgroups" > "$rundir/$name.cgroup"
    if [ -n "$applied" ]; then
        say "limits MemoryMax=${memory_max:-none} CPUQuota=${cpu_quota:-none}: $applied"
    else
        say "limits MemoryMax=${memory_max:-none} CPUQuota=${cpu_quota:-none} NOT enforced: no writable cgroup (run as root on a kernel with cgroups)"
    fi
}
oom_kills() {  # how many times the kernel's OOM killer struck in the service's memory cgroup
    n=0
    for d in $cgroups; do
        for f in "$d/memory.events" "$d/memory.oom_control"; do
            k=$(sed -n 's/^oom_kill //p' "$f" 2>/dev/null)
            [ -z "$k" ] || n=$((n + k))
        done
    done
    echo "$n"
}
remove_cgroups() {  # empty once the service and its children are gone; wait a little for them
    for d in $cgroups; do
        i=0
        while [ -d "$d" ] && ! rmdir "$d" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
    done
    rm -f "$rundir/$name.cgroup"
}

if [ -n "$env_file" ]; then
    case "$env_file" in -*) env_file=${env_file#-}; [ -r "$env_file" ] || env_file= ;; esac
    if [ -n "$env_file" ]; then set -a; . "$env_file"; set +a; fi
fi
for kv in $(sed -n 's/^Environment=//p' "$unit"); do export "$kv"; done

child=
stopping=0
stop() {
    stopping=1
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
    say "$name stopped"
    remove_cgroups
    rm -f "$rundir/$name.pid" "$rundir/$name.child"
    exit 0
}
trap stop TERM INT HUP

echo $$ > "$rundir/$name.pid"
echo 0 > "$rundir/$name.restarts"
setup_limits
starts=0
while :; do
    say "starting $name"
    ooms=$(oom_kills)
    (
        # join the service's cgroups before exec: everything it starts is counted there too
        read -r self _ < /proc/self/stat
        for d in $cgroups; do echo "$self" > "$d/cgroup.procs"; done
        [ -z "$work_dir" ] || cd "$work_dir" || exit 200
        eval "exec nice -n ${nice_val:-0} $exec_start"
    ) >> "$log" 2>&1 < /dev/null &
    child=$!
    echo "$child" > "$rundir/$name.child"
    wait "$child"
    rc=$?
    [ "$stopping" = 1 ] && break
    if [ "$(oom_kills)" -gt "$ooms" ]; then
        say "$name exited with status $rc: killed by the kernel for going over MemoryMax=$memory_max"
    else
        say "$name exited with status $rc"
    fi
    case "${restart:-no}" in
        always) ;;
        on-failure) [ "$rc" -ne 0 ] || break ;;
        *) break ;;
    esac
    starts=$((starts + 1))
    echo "$starts" > "$rundir/$name.restarts"
    sleep "${restart_sec:-1}"
done
remove_cgroups
rm -f "$rundir/$name.pid" "$rundir/$name.child"
