#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kwok), kubectl and helm from the Go modules pinned in this folder's go.mod, into a cache folder named
# after the versions. Builds only what is missing; prints the folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

ver() { go list -m -f '{{.Version}}' "$1"; }
k8s=$(ver k8s.io/kubernetes); etcd=$(ver go.etcd.io/etcd/server/v3)
kwok=$(ver sigs.k8s.io/kwok); helm=$(ver helm.sh/helm/v3)
cache=${ATRIUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/atrium}
bin="$cache/bin/k8s-$k8s-etcd-$etcd-kwok-$kwok-helm-$helm"

declare -A pkgs=(
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
  [helm]=helm.sh/helm/v3/cmd/helm
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
)
missing=()
for name in "${!pkgs[@]}"; do [ -x "$bin/$name" ] || missing+=("$name"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi

minor=${k8s#v1.}; minor=${minor%%.*}
stamp=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $p.gitVersion=$k8s -X $p.gitMajor=1 -X $p.gitMinor=$minor"
done
stamp+=" -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok"
stamp+=" -X helm.sh/helm/v3/internal/version.version=$helm"

# Each binary is built into a folder of this run's own and moved into place whole (a rename
# within one file system), so two builds at once (make demo beside make test) never see or
# clobber each other's half-written files.
mkdir -p "$bin"
tmp=$(mktemp -d "$bin.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
for name in "${missing[@]}"; do
  echo "building $name (${pkgs[$name]})" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $stamp" -o "$tmp/$name" "${pkgs[$name]}"
  mv -f "$tmp/$name" "$bin/$name"
done
echo "built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
echo "$bin"
