#!/usr/bin/env bash
# Stops every process `up.sh` started, by pid, and removes the cluster state.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${ATRIUM_CLUSTER_DIR:-$root/target/cluster}
[ -f "$state/pids" ] || { rm -rf "$state"; exit 0; }
# Reverse start order: kwok and the controllers first, etcd last.
pids=$(tac "$state/pids" | awk '{print $2}')
for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
# A zombie (exited, not yet reaped by its new parent) counts as stopped.
running() { [ -r "/proc/$1/stat" ] && [ "$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
for _ in $(seq 1 100); do
  alive=""; for pid in $pids; do running "$pid" && alive="$alive $pid"; done
  [ -z "$alive" ] && break
  sleep 0.1
done
for pid in $alive; do kill -KILL "$pid" 2>/dev/null; done
rm -rf "$state"
echo "cluster: stopped" >&2
