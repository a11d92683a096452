#!/bin/sh
# ecufl-supervise UNIT RUNDIR: run a systemd unit's service the way systemd would, on boards (and
# test network namespaces) that have no systemd. It reads from UNIT: ExecStart, Environment,
# EnvironmentFile, WorkingDirectory, Restart (no | on-failure | always), RestartSec, Nice.
# Not honoured (they need cgroups): MemoryMax, CPUQuota and the sandboxing options; systemd
# applies those on real boards.
#
# Started as `setsid ecufl-supervise ...` it leads its own process group, so `kill -TERM -PGID`
# stops the service with every child it spawned (flower-supernode's superexec and clientapps).
# Files in RUNDIR: NAME.pid (this supervisor), NAME.child (the service), NAME.log (its output,
# plus one line per start and exit), NAME.restarts (how many times it was restarted).
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
[ -n "$exec_start" ] || { echo "ecufl-supervise: $unit has no ExecStart" >&2; exit 2; }

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
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ecufl-supervise: $name stopped" >> "$log"
    rm -f "$rundir/$name.pid" "$rundir/$name.child"
    exit 0
}
trap stop TERM INT HUP

echo $$ > "$rundir/$name.pid"
echo 0 > "$rundir/$name.restarts"
starts=0
while :; do
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ecufl-supervise: starting $name" >> "$log"
    (
        [ -z "$work_dir" ] || cd "$work_dir" || exit 200
        eval "exec nice -n ${nice_val:-0} $exec_start"
    ) >> "$log" 2>&1 < /dev/null &
    child=$!
    echo "$child" > "$rundir/$name.child"
    wait "$child"
    rc=$?
    [ "$stopping" = 1 ] && break
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ecufl-supervise: $name exited with status $rc" >> "$log"
    case "${restart:-no}" in
        always) ;;
        on-failure) [ "$rc" -ne 0 ] || break ;;
        *) break ;;
    esac
    starts=$((starts + 1))
    echo "$starts" > "$rundir/$name.restarts"
    sleep "${restart_sec:-1}"
done
rm -f "$rundir/$name.pid" "$rundir/$name.child"
