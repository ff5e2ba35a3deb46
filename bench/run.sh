#!/usr/bin/env bash
# Operator benchmarks (`make bench`): starts a benchmark-sized local control plane, installs the
# operator's ServiceAccount and ClusterRole from the Helm chart, builds the operator and the
# benchmark in release mode, runs the scenarios (bench/src/main.rs) and writes the report into
# docs/benchmarks.md. The cluster is stopped afterwards.
#
# Knobs (environment): BENCH_TRIALS (3), BENCH_SIZES (100,300,1000), BENCH_KINDS (md,cc),
# BENCH_STEADY_SECONDS (600), BENCH_MEMORY_OBJECTS (5000; 0 skips), BENCH_CLUSTER_QPS (200: client
# QPS of kube-controller-manager and kube-scheduler), BENCH_NODES (10), BENCH_KEEP_CLUSTER (0),
# BENCH_WRITE_DOCS (1: splice the report into docs/benchmarks.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=$root/target/bench-cluster
out=$root/target/bench/operator
release=atrium namespace=atrium-system

bin=$(hack/cluster/build.sh)
kubectl() { "$bin/kubectl" "$@"; }

echo "bench: building the operator and the benchmark (release)..."
cargo build --release --quiet -p atrium -p atrium-bench --bin atrium-operator --bin atrium-bench
target=${CARGO_TARGET_DIR:-$root/target}/release

# Nodes large enough for thousands of pods: the benchmark measures the operator, not the scheduler
# running out of room.
mkdir -p "$out" "$(dirname "$state")"
nodes=$out/nodes.yaml
: > "$nodes"
for i in $(seq 1 "${BENCH_NODES:-10}"); do
  cat >> "$nodes" <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: bench-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: bench-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok, atrium.dev/pool: cpu}
spec: {}
status:
  capacity: {cpu: "1000", memory: 8Ti, pods: "3000"}
  allocatable: {cpu: "1000", memory: 8Ti, pods: "3000"}
NODE
done

# A fresh cluster every run: figures from a cluster that earlier runs left objects in are not comparable.
ATRIUM_CLUSTER_DIR=$state "$root/hack/cluster/down.sh" >/dev/null 2>&1 || true
ATRIUM_CLUSTER_DIR=$state ATRIUM_CLUSTER_NODES=$nodes ATRIUM_CLUSTER_AUDIT_POLICY=$root/bench/audit-policy.yaml \
  ATRIUM_CLUSTER_CLIENT_QPS=${BENCH_CLUSTER_QPS:-200} "$root/hack/cluster/up.sh"
if [ "${BENCH_KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'ATRIUM_CLUSTER_DIR=$state "$root/hack/cluster/down.sh"' EXIT
fi
export KUBECONFIG=$state/kubeconfig

# The operator as the chart installs it: its ServiceAccount and ClusterRole, no admin rights.
kubectl apply --server-side -f crds/ >/dev/null
kubectl create namespace "$namespace" >/dev/null
"$bin/helm" template "$release" charts/atrium -n "$namespace" --kube-version "$(basename "$bin" | sed -E 's/^k8s-(v[0-9.]+)-.*/\1/')" \
  --show-only templates/rbac.yaml --show-only templates/workspace-roles.yaml | kubectl apply -f - >/dev/null
# The oracle: a ServiceAccount of its own with the same role, so both go through API priority and
# fairness alike.
kubectl create serviceaccount atrium-bench-oracle -n "$namespace" >/dev/null
kubectl create clusterrolebinding atrium-bench-oracle --clusterrole="$release-operator" \
  --serviceaccount="$namespace:atrium-bench-oracle" >/dev/null
sa_kubeconfig() { # serviceaccount file
  local token
  token=$(kubectl create token "$1" -n "$namespace" --duration=48h)
  sed "s/^\(    token: \).*/\1$token/" "$KUBECONFIG" > "$2"
}
sa_kubeconfig "$release" "$out/operator.kubeconfig"
sa_kubeconfig atrium-bench-oracle "$out/oracle.kubeconfig"

machine="$(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)"
versions="Kubernetes, etcd, kwok: $(basename "$bin"); $(rustc --version | cut -d' ' -f1-2)"
"$target/atrium-bench" \
  --operator "$target/atrium-operator" \
  --operator-kubeconfig "$out/operator.kubeconfig" \
  --operator-user "system:serviceaccount:$namespace:$release" \
  --oracle-kubeconfig "$out/oracle.kubeconfig" \
  --audit-log "$state/logs/audit.log" \
  --out "$out" \
  --trials "${BENCH_TRIALS:-3}" --sizes "${BENCH_SIZES:-100,300,1000}" --kinds "${BENCH_KINDS:-md,cc}" \
  --steady-seconds "${BENCH_STEADY_SECONDS:-600}" --memory-objects "${BENCH_MEMORY_OBJECTS:-5000}" \
  --machine "$machine" --versions "$versions"

if [ "${BENCH_WRITE_DOCS:-1}" = 1 ]; then
  python3 - "$out/report.md" docs/benchmarks.md <<'PY'
import sys
report, doc = sys.argv[1], sys.argv[2]
begin, end = "<!-- operator-results:begin -->", "<!-- operator-results:end -->"
text = open(doc).read()
if begin not in text or end not in text:
    sys.exit(f"{doc} has no {begin} ... {end} section to write the results into")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + begin + "\n" + open(report).read() + end + tail)
PY
  echo "bench: results written to docs/benchmarks.md (raw: $out/results.json)"
fi
