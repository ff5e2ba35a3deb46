#!/usr/bin/env bash
# A fresh benchmark cluster: stops the previous one (target/bench-cluster), starts a new one with
# large fake nodes, the operator's audit policy and raised controller QPS, installs the CRDs and —
# from the Helm chart — the operator's ServiceAccount and ClusterRole, and writes kubeconfigs for
# the operator's and the oracle's ServiceAccounts. bench/run.sh calls it before every burst: a new
# cluster takes about 10 s, deleting a namespace of 1000 endpoints minutes.
#
#   bench/cluster.sh up     # or: down
source "$(dirname "$0")/common.sh"

if [ "${1:-up}" = down ]; then
  ATRIUM_CLUSTER_DIR=$state hack/cluster/down.sh
  exit 0
fi

bin=$(hack/cluster/build.sh)
kubectl() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# Nodes large enough for thousands of pods: the benchmark measures the operator, not the scheduler
# running out of room.
mkdir -p "$out"
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

ATRIUM_CLUSTER_DIR=$state hack/cluster/down.sh >/dev/null 2>&1 || true
ATRIUM_CLUSTER_DIR=$state ATRIUM_CLUSTER_NODES=$nodes ATRIUM_CLUSTER_AUDIT_POLICY=$root/bench/audit-policy.yaml \
  ATRIUM_CLUSTER_CLIENT_QPS=${BENCH_CLUSTER_QPS:-200} hack/cluster/up.sh 2>/dev/null

# The operator as the chart installs it: its ServiceAccount and ClusterRole, no admin rights.
kubectl apply --server-side -f crds/ >/dev/null
kubectl create namespace "$namespace" >/dev/null
"$bin/helm" template "$release" charts/atrium -n "$namespace" \
  --kube-version "$(basename "$bin" | sed -E 's/^k8s-(v[0-9.]+)-.*/\1/')" \
  --show-only templates/rbac.yaml --show-only templates/workspace-roles.yaml | kubectl apply -f - >/dev/null
# The oracle: a ServiceAccount of its own with the same role, so both go through API priority and
# fairness alike.
kubectl create serviceaccount atrium-bench-oracle -n "$namespace" >/dev/null
kubectl create clusterrolebinding atrium-bench-oracle --clusterrole="$release-operator" \
  --serviceaccount="$namespace:atrium-bench-oracle" >/dev/null
sa_kubeconfig() { # serviceaccount file
  local token
  token=$(kubectl create token "$1" -n "$namespace" --duration=48h)
  sed "s/^\(    token: \).*/\1$token/" "$state/kubeconfig" > "$2"
}
sa_kubeconfig "$release" "$out/operator.kubeconfig"
sa_kubeconfig atrium-bench-oracle "$out/oracle.kubeconfig"
