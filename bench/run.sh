#!/usr/bin/env bash
# Operator benchmarks (`make bench`): builds the operator and the benchmark in release mode, runs
# the scenarios (bench/src/main.rs), each burst on a fresh benchmark-sized local control plane
# (bench/cluster.sh: large fake nodes, the operator under the chart's ServiceAccount and
# ClusterRole), and writes the report into docs/benchmarks.md. The cluster is stopped afterwards.
#
# Knobs (environment): BENCH_TRIALS (3), BENCH_SIZES (100,300,1000), BENCH_KINDS (md,cc),
# BENCH_STEADY_SECONDS (600), BENCH_MEMORY_OBJECTS (5000; 0 skips), BENCH_CLUSTER_QPS (200: client
# QPS of kube-controller-manager and kube-scheduler), BENCH_NODES (10), BENCH_KEEP_CLUSTER (0),
# BENCH_WRITE_DOCS (1: splice the report into docs/benchmarks.md), BENCH_NO_ORACLE (unset: set to
# 1 to run the operator alone, without the oracle's bursts).
source "$(dirname "$0")/common.sh"

bin=$(hack/cluster/build.sh)

echo "bench: building the operator and the benchmark (release)..."
cargo build --release --quiet -p atrium -p atrium-bench --bin atrium-operator --bin atrium-bench
target=${CARGO_TARGET_DIR:-$root/target}/release

mkdir -p "$out"
bench/cluster.sh up
if [ "${BENCH_KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'bench/cluster.sh down >/dev/null' EXIT
fi
export KUBECONFIG=$state/kubeconfig

machine="$(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)"
versions="Kubernetes, etcd, kwok: $(basename "$bin"); $(rustc --version | cut -d' ' -f1-2)"
"$target/atrium-bench" \
  --operator "$target/atrium-operator" \
  --operator-kubeconfig "$out/operator.kubeconfig" \
  --operator-user "system:serviceaccount:$namespace:$release" \
  --oracle-kubeconfig "$out/oracle.kubeconfig" \
  --audit-log "$state/logs/audit.log" \
  --reset "$root/bench/cluster.sh" \
  --out "$out" \
  --trials "${BENCH_TRIALS:-3}" --sizes "${BENCH_SIZES:-100,300,1000}" --kinds "${BENCH_KINDS:-md,cc}" \
  --steady-seconds "${BENCH_STEADY_SECONDS:-600}" --memory-objects "${BENCH_MEMORY_OBJECTS:-5000}" \
  --machine "$machine" --versions "$versions" ${BENCH_NO_ORACLE:+--no-oracle}

if [ "${BENCH_WRITE_DOCS:-1}" = 1 ]; then
  python3 hack/splice-results.py "$out/report.md" docs/benchmarks.md operator-results
  echo "bench: results written to docs/benchmarks.md (raw: $out/results.json)"
fi
