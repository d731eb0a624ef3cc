#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from source through the Go module proxy and
# caches them outside the repository, in $MESHTLS_CACHE/k8s-<version>/ (default
# ~/.cache/meshtls). Nothing that is already cached is rebuilt. Prints progress: a
# first build takes 15-25 minutes on two cores.
#
# Usage: hack/build-controlplane.sh [kubernetes-version] [etcd-version]
# Prints the assets directory (usable as KUBEBUILDER_ASSETS) on its last line.
set -euo pipefail

K8S_VERSION=${1:-${K8S_VERSION:-v1.37.2}}
ETCD_VERSION=${2:-${ETCD_VERSION:-v3.6.16}}
CACHE=${MESHTLS_CACHE:-$HOME/.cache/meshtls}
ASSETS="$CACHE/k8s-$K8S_VERSION"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # v1.37.2 -> v0.37.2

mkdir -p "$ASSETS"
log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build_etcd() {
  if [ -x "$ASSETS/etcd" ]; then log "etcd $ETCD_VERSION cached"; return; fi
  local work; work=$(mktemp -d)
  log "building etcd $ETCD_VERSION (about 3 minutes)"
  (
    cd "$work"
    go mod init meshtls.local/build-etcd >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    printf 'package tools\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy >/dev/null 2>&1 || true
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$ASSETS/etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$ASSETS/etcd.tmp" "$ASSETS/etcd"
  rm -rf "$work"
  log "etcd ready"
}

k8s_module() {
  # A throwaway module that requires k8s.io/kubernetes and maps every staging module
  # it replaces with ./staging/... to the published version of that module.
  local work=$1
  cd "$work"
  go mod init meshtls.local/build-k8s >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$STAGING_VERSION"
  done
  printf 'package tools\nimport (\n _ "k8s.io/kubernetes/cmd/kube-apiserver"\n _ "k8s.io/kubernetes/cmd/kube-controller-manager"\n _ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > tools.go
  GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
}

build_k8s() {
  if [ -x "$ASSETS/kube-apiserver" ] && [ -x "$ASSETS/kube-controller-manager" ] && [ -x "$ASSETS/kubectl" ]; then
    log "kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION cached"; return
  fi
  local work; work=$(mktemp -d)
  log "preparing k8s.io/kubernetes $K8S_VERSION module"
  ( k8s_module "$work" )
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    if [ -x "$ASSETS/$cmd" ]; then continue; fi
    log "building $cmd $K8S_VERSION (kube-apiserver and kube-controller-manager take 10-17 minutes each)"
    ( cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ASSETS/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" )
    mv "$ASSETS/$cmd.tmp" "$ASSETS/$cmd"
    log "$cmd ready"
  done
  rm -rf "$work"
}

build_etcd
build_k8s
echo "$ASSETS"
