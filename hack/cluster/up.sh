#!/usr/bin/env bash
# Starts Atrium's local control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (fake kubelets), registers fake nodes and returns once /readyz answers
# and every node is Ready. A healthy cluster already up is reused. State: target/cluster/.
#
# Knobs (environment), for benchmarks; tests and the demo use the defaults:
#   ATRIUM_CLUSTER_DIR     state directory (default target/cluster)
#   ATRIUM_CLUSTER_NODES   the fake nodes to register (default hack/cluster/nodes.yaml)
#   ATRIUM_CLUSTER_AUDIT_POLICY  audit policy (default hack/cluster/audit-policy.yaml)
#   ATRIUM_CLUSTER_CLIENT_QPS    client QPS of kube-controller-manager and kube-scheduler (burst
#                          twice that); unset keeps their defaults (20 and 50), which a burst of
#                          thousands of pods waits on
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${ATRIUM_CLUSTER_DIR:-$root/target/cluster}
kubeconfig="$state/kubeconfig"
nodes=${ATRIUM_CLUSTER_NODES:-$here/nodes.yaml}
audit_policy=${ATRIUM_CLUSTER_AUDIT_POLICY:-$here/audit-policy.yaml}
client_qps=()
if [ -n "${ATRIUM_CLUSTER_CLIENT_QPS:-}" ]; then
  client_qps=(--kube-api-qps "$ATRIUM_CLUSTER_CLIENT_QPS" --kube-api-burst "$((ATRIUM_CLUSTER_CLIENT_QPS * 2))")
fi

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

command -v openssl >/dev/null || { log "installing openssl"; (apt-get update -qq && apt-get install -y -qq openssl) >/dev/null; }
bin=$("$here/build.sh")
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

healthy() {
  [ -f "$kubeconfig" ] && [ -f "$state/pids" ] || return 1
  while read -r name pid; do kill -0 "$pid" 2>/dev/null || return 1; done < "$state/pids"
  kubectl get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  log "reusing the running cluster (kubeconfig: $kubeconfig)"
  exit 0
fi
if [ -f "$state/pids" ]; then
  log "a previous cluster is not healthy: stopping it"
  "$here/down.sh"
fi

start_time=$(date +%s)
mkdir -p "$state"/{pki,logs,etcd}
: > "$state/pids"

# Six free listening ports, below the kernel's ephemeral range: a port taken from that range can be
# handed to some process's outgoing connection (the API server's own, to etcd) before the component
# that is to listen on it has started.
read -r etcd_port etcd_peer api_port kcm_port sched_port kwok_port < <(python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = []
while len(ports) < 6:
    port = random.randrange(20000, max(low, 20001))
    if port in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
print(*ports)
PY
)

# --- certificates and credentials -------------------------------------------------------------
pki="$state/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=atrium-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' > "$pki/apiserver.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 365 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
token=$(openssl rand -hex 24)
echo "$token,admin,admin,system:masters" > "$pki/tokens.csv"

write_kubeconfig() { # file user token
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: atrium-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: atrium-local
  context: {cluster: atrium-local, user: $2}
current-context: atrium-local
KC
}
write_kubeconfig "$state/admin.kubeconfig" admin "$token"

start() { # name args...
  local name=$1; shift
  "$@" > "$state/logs/$name.log" 2>&1 &
  echo "$name $!" >> "$state/pids"
}

# --- etcd -------------------------------------------------------------------------------------
start etcd "$bin/etcd" --name atrium --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "atrium=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --quota-backend-bytes 4294967296 \
  --listen-metrics-urls "" --log-level warn

# --- kube-apiserver ---------------------------------------------------------------------------
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC \
  --endpoint-reconciler-type none --allow-privileged=true \
  --enable-priority-and-fairness=true --profiling=false \
  --audit-log-path "$state/logs/audit.log" --audit-policy-file "$audit_policy" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1

until "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  for p in etcd kube-apiserver; do
    pid=$(awk -v n=$p '$1==n{print $2}' "$state/pids")
    kill -0 "$pid" 2>/dev/null || die "$p exited; see $state/logs/$p.log: $(tail -5 "$state/logs/$p.log")"
  done
  [ $(( $(date +%s) - start_time )) -lt 120 ] || die "kube-apiserver not ready after 120s; see $state/logs"
  sleep 0.2
done
cp "$state/admin.kubeconfig" "$kubeconfig"

# --- controller-manager, scheduler, kwok --------------------------------------------------------
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' \
  --node-monitor-grace-period 50s --profiling=false "${client_qps[@]}"
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --profiling=false "${client_qps[@]}"
start kwok "$bin/kwok" --kubeconfig "$kubeconfig" --config "$here/kwok.yaml" \
  --server-address "127.0.0.1:$kwok_port"

# --- fake nodes -------------------------------------------------------------------------------
kubectl apply -f "$nodes" >/dev/null
want=$(grep -c '^kind: Node' "$nodes")
deadline=$(( $(date +%s) + 60 ))
until [ "$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')" -ge "$want" ] \
  && kubectl get serviceaccount default -n default >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || die "nodes not Ready after 60s; see $state/logs/kwok.log"
  sleep 0.2
done
while read -r name pid; do
  kill -0 "$pid" 2>/dev/null || die "$name exited; see $state/logs/$name.log: $(tail -3 "$state/logs/$name.log")"
done < "$state/pids"
log "up in $(( $(date +%s) - start_time ))s: kube-apiserver https://127.0.0.1:$api_port, $(kubectl get nodes --no-headers | wc -l) nodes Ready"
log "export KUBECONFIG=$kubeconfig"
