#!/usr/bin/env bash
# `make test`: builds what is missing, starts a fresh local control plane of its own (a cluster
# started by `make cluster` is left alone), runs lint, unit and integration tests against it, and
# always stops it. Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export ATRIUM_CLUSTER_DIR="$root/target/test-cluster"
t0=$(date +%s)
stamp() { echo "test: $* ($(( $(date +%s) - t0 ))s)" >&2; }

hack/cluster/down.sh 2>/dev/null || true
trap 'hack/cluster/down.sh' EXIT

# Argo CD's health checks are tested with a real Lua 5.1 (Argo CD's gopher-lua is a Lua 5.1).
command -v lua5.1 >/dev/null || { (apt-get update -qq && apt-get install -y -qq lua5.1) >/dev/null; }

# The control plane starts in the background while Rust builds: both are slow on 2 cores.
hack/cluster/build.sh >/dev/null
stamp "control plane binaries ready"
mkdir -p "$root/target"
hack/cluster/up.sh > "$root/target/test-cluster-up.log" 2>&1 &
up_pid=$!

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
stamp "lint clean"
cargo test --workspace --no-run
stamp "tests built"

wait "$up_pid" || { cat "$root/target/test-cluster-up.log" >&2; exit 1; }
stamp "cluster up"
export KUBECONFIG="$ATRIUM_CLUSTER_DIR/kubeconfig"
export ATRIUM_BIN_DIR; ATRIUM_BIN_DIR=$(hack/cluster/build.sh)
cargo test --workspace
stamp "unit and integration tests passed"

# The container images copy these: they must build, be static and start.
out=$(hack/build-release.sh target/release-static | tail -1)
for b in atrium-operator atrium-router; do
  ldd "$out/$b" 2>&1 | grep -qE "not a dynamic executable|statically linked" || { echo "$b is not static" >&2; exit 1; }
  "$out/$b" --version >/dev/null
done
stamp "static release binaries built and start"
