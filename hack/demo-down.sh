#!/usr/bin/env bash
# `make demo-down`: stops the demo's local processes (by pid) and the local control plane.
# With --keep-cluster, only the processes.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/target/demo"
for f in "$state"/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$f"
done
[ "${1:-}" = "--keep-cluster" ] && exit 0
"$root/hack/cluster/down.sh"
rm -rf "$state"
