#!/usr/bin/env bash
# `make run`: run the manager against the current kubeconfig; with none, start the local
# control plane (kube-apiserver, etcd, cert-manager, the CRDs) and run it against that.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MESHTLS_CACHE:=$HOME/.cache/meshtls}"
export MESHTLS_CACHE
assets=$(hack/build-controlplane.sh)
kubectl="$assets/kubectl"

mkdir -p bin
go build -o bin/manager ./cmd/manager
# The API server cannot reach webhooks served from this shell without certificates and
# a Service; `make deploy` serves them in the cluster.
manager_flags=(--leader-elect=false --enable-webhooks=false "$@")

kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [ -n "${KUBECONFIG:-}" ] || [ -f "$kubeconfig" ]; then
  echo "Using the current kubeconfig ($kubeconfig): installing the CRDs, then running the manager." >&2
  "$kubectl" apply --server-side --field-manager=meshtls-operator -k config/crd >&2
  exec bin/manager "${manager_flags[@]}"
fi

echo "No kubeconfig: starting a local control plane." >&2
go build -o bin/localcp ./internal/testenv/cmd/localcp
exec bin/localcp -- bin/manager "${manager_flags[@]}"
