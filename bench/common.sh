# Sourced by bench/run.sh and bench/cluster.sh: where the benchmark keeps its cluster and results,
# and the Helm release whose ServiceAccount the operator runs as.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
state=$root/target/bench-cluster
out=$root/target/bench/operator
release=atrium namespace=atrium-system
