#!/usr/bin/env bash
# `make run`: run the manager against the current kubeconfig; with none, start the local
# control plane (etcd, kube-apiserver, kube-controller-manager, cert-manager, the CRDs)
# and run the manager against that, admission webhooks included. Extra arguments go to
# the manager. docs/local-cluster.md walks through it.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MESHTLS_CACHE:=$HOME/.cache/meshtls}"
export MESHTLS_CACHE
assets=$(hack/build-controlplane.sh)
kubectl="$assets/kubectl"

mkdir -p bin
go build -o bin/manager ./cmd/manager

kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [ -n "${KUBECONFIG:-}" ] || [ -f "$kubeconfig" ]; then
  # A cluster cannot call webhooks served from this shell without a Service and a
  # certificate it trusts; `make deploy` serves them in the cluster.
  echo "Using the current kubeconfig ($kubeconfig): installing the CRDs, then running the manager without its webhooks." >&2
  "$kubectl" apply --server-side --field-manager=meshtls-operator -k config/crd >&2
  exec bin/manager --leader-elect=false --enable-webhooks=false "$@"
fi

echo "No kubeconfig: starting a local control plane." >&2
go build -o bin/localcp ./internal/testenv/cmd/localcp
# localcp installs the webhook configurations (URL webhooks calling 127.0.0.1 with a
# certificate it makes), the operator's ServiceAccount, RBAC and PodProxyConfig guard,
# and hands the manager the port, the certificate and a kubeconfig of that
# ServiceAccount through the environment: the manager runs with the permissions it has
# in a cluster.
# shellcheck disable=SC2016 # expanded by the inner shell, with localcp's environment
exec bin/localcp --webhooks --operator -- sh -c 'KUBECONFIG="$MESHTLS_OPERATOR_KUBECONFIG" exec bin/manager \
  --leader-elect=false --enable-webhooks=true \
  --webhook-port="$MESHTLS_WEBHOOK_PORT" --webhook-cert-dir="$MESHTLS_WEBHOOK_CERT_DIR" "$@"' manager "$@"
