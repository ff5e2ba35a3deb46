#!/usr/bin/env bash
# `make demo`: the local control plane, Atrium's CRDs and operator, the quickstart applied and
# reconciled to Ready, and a real prediction — the training script, the scoring server and the
# router run as local processes from the specs the operator generated (the cluster's nodes are
# simulated, so nothing would run them otherwise). `make demo-down` stops it all.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="$root/target/demo"
ns=team-a
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; echo "demo: what started is still running; make demo-down stops it" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$root/hack/demo-down.sh" --keep-cluster >/dev/null 2>&1 || true
mkdir -p "$state"

say "Local control plane (make cluster)"
hack/cluster/up.sh
bin=$(hack/cluster/build.sh)
export KUBECONFIG="$root/target/cluster/kubeconfig"
k() { "$bin/kubectl" "$@"; }
wait_for() { # what, timeout seconds, command...
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what (operator log: $state/operator.log)"
    sleep 0.5
  done
}

say "Building the operator, the router and atrium-local (quiet; about 5 minutes the first time)"
cargo build --quiet -p atrium -p atrium-router --bins
target=${CARGO_TARGET_DIR:-$root/target}/debug
venv=$(hack/python-env.sh)

say "Installing the CRDs"
k apply --server-side -f crds/ >/dev/null
k wait --for=condition=Established crd -l app.kubernetes.io/part-of=atrium --timeout=60s >/dev/null 2>&1 \
  || k wait --for=condition=Established -f crds/ --timeout=60s >/dev/null

say "Starting the operator (log: target/demo/operator.log)"
op_port=$(free_port)
"$target/atrium-operator" --leader-elect=false --http-addr "127.0.0.1:$op_port" > "$state/operator.log" 2>&1 &
echo $! > "$state/operator.pid"
wait_for "the operator to be ready" 60 curl -sf "http://127.0.0.1:$op_port/readyz"

say "Workspace team-a and instance type cpu-small"
k apply --server-side -f examples/quickstart/workspace.yaml
k wait --for=condition=Ready workspace/team-a --timeout=60s
# No storage provisioner on the local cluster: pre-provision a volume for the workspace claim,
# as a platform team would for static storage. (Nothing is written to it: the demo's local
# processes use target/demo/storage instead.)
claim=$(k get workspace team-a -o jsonpath='{.status.storage.claimName}')
k apply --server-side -f - >/dev/null <<PV
apiVersion: v1
kind: PersistentVolume
metadata: {name: atrium-demo-team-a, labels: {app.kubernetes.io/part-of: atrium-demo}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  hostPath: {path: /tmp/atrium-demo-team-a}
  claimRef: {namespace: $ns, name: $claim}
PV

say "Compute cluster, training run and endpoint (kubectl apply -k examples/quickstart)"
k apply --server-side -k examples/quickstart
k wait --for=condition=Ready computecluster/cpu-cluster -n $ns --timeout=60s

say "Training run iris-train"
wait_for "the training run to succeed" 120 bash -c "[ \"\$('$bin/kubectl' get trun iris-train -n $ns -o jsonpath='{.status.phase}')\" = Succeeded ]"
job=$(k get trun iris-train -n $ns -o jsonpath='{.status.jobName}')
echo "The cluster's (simulated) node finished Job $job; running its container here, as its spec says:"
"$target/atrium-local" -n $ns --storage "$state/storage" --scratch "$state/train" --path-prepend "$venv/bin" job "$job"
model=$(k get trun iris-train -n $ns -o jsonpath='{.status.registeredModel}')
echo "Registered model: $model"

say "Endpoint iris"
k wait --for=condition=Ready modeldeployment/iris -n $ns --timeout=120s
server=$(k get deploy -n $ns -l atrium.dev/deployment=blue -o jsonpath='{.items[0].metadata.name}')
router=$(k get deploy -n $ns -l app.kubernetes.io/component=router -o jsonpath='{.items[0].metadata.name}')
secret=$(k get mdep iris -n $ns -o jsonpath='{.status.keysSecret}')

score_port=$(free_port); router_port=$(free_port); admin_port=$(free_port)
"$target/atrium-local" -n $ns --storage "$state/storage" --scratch "$state/server" --path-prepend "$venv/bin" \
  deployment "$server" --port "$score_port" > "$state/scoring-server.log" 2>&1 &
echo $! > "$state/scoring-server.pid"
wait_for "the scoring server (log: $state/scoring-server.log)" 120 curl -sf "http://127.0.0.1:$score_port/"
"$target/atrium-local" -n $ns --scratch "$state/router" router "$router" --bin "$target/atrium-router" \
  --listen "127.0.0.1:$router_port" --admin-listen "127.0.0.1:$admin_port" \
  --backend "blue=http://127.0.0.1:$score_port" > "$state/router.log" 2>&1 &
echo $! > "$state/router.pid"
wait_for "the router (log: $state/router.log)" 60 curl -sf "http://127.0.0.1:$admin_port/readyz"

say "What Atrium created"
k get atrium -n $ns
k get deploy,svc,job,pods,configmap,secret,rolebinding,resourcequota,pvc -n $ns -l app.kubernetes.io/managed-by=atrium

key=$(k get secret "$secret" -n $ns -o jsonpath='{.data.primaryKey}' | base64 -d)
body='{"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
say "A prediction through the endpoint's router"
echo "status.scoringUri: $(k get mdep iris -n $ns -o jsonpath='{.status.scoringUri}') (a simulated load balancer: TEST-NET, not reachable)"
echo "Here the router listens on 127.0.0.1:$router_port. Call it as you would Azure ML, with a key from Secret $ns/$secret:"
echo "  key=\$(KUBECONFIG=$KUBECONFIG $bin/kubectl get secret $secret -n $ns -o jsonpath='{.data.primaryKey}' | base64 -d)"
echo "  curl -s -H \"Authorization: Bearer \$key\" -H 'Content-Type: application/json' -d '$body' http://127.0.0.1:$router_port/score"
prediction=$(curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$router_port/score") \
  || die "the prediction failed; see $state/router.log and $state/scoring-server.log"
echo "$prediction"
echo "$prediction" | grep -q '"predictions"' || die "unexpected answer: $prediction"
echo
echo "The demo keeps running: try the curl above. KUBECONFIG=$KUBECONFIG. Stop everything with: make demo-down"
