#!/usr/bin/env bash
# Prints a merge patch for Argo CD's argocd-cm that adds health checks for every Atrium kind:
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file <(hack/argocd-health-patch.sh)
set -euo pipefail
dir=$(cd "$(dirname "$0")/../charts/atrium/files/argocd" && pwd)
indent() { sed 's/^/    /'; }
echo "data:"
for kind in Workspace InstanceType ComputeCluster Model ModelDeployment; do
  echo "  resource.customizations.health.atrium.dev_$kind: |"
  indent < "$dir/ready.lua"
done
echo "  resource.customizations.health.atrium.dev_TrainingRun: |"
indent < "$dir/trainingrun.lua"
