# meshtls-operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION  ?= v1.37.2
ETCD_VERSION ?= v3.6.16
MESHTLS_CACHE ?= $(HOME)/.cache/meshtls
export MESHTLS_CACHE
KUBEBUILDER_ASSETS ?= $(MESHTLS_CACHE)/k8s-$(K8S_VERSION)
export KUBEBUILDER_ASSETS
IMG ?= ghcr.io/meshtls/meshtls-operator:dev
PROXY_IMG ?= ghcr.io/meshtls/meshtls-proxy:dev
CONTROLLER_GEN := go tool controller-gen
GO_TEST_FLAGS ?= -count=1 -timeout 45m

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: run
run: ## Run the manager against the current kubeconfig, or, with none, against a local control plane it starts.
	hack/run.sh

.PHONY: test
test: controlplane ## Unit and integration tests against a real kube-apiserver, etcd and cert-manager.
	go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: controlplane ## Benchmarks: resolver and admission decisions (go test -bench), convergence and write discipline, cold start and RSS, admission latency, certificate issuance, the proxy against bare TLS and ghostunnel.
	go test -run '^$$' -bench . -benchtime 2s ./internal/policy/
	go run ./test/bench/convergence -pods 1000,5000
	go run ./test/bench/coldstart -pods 10000 -policies 1000
	go run ./test/bench/admission -policies 1000 -pods 5000
	go run ./test/bench/identity
	go run ./test/bench/proxy

.PHONY: fuzz
fuzz: ## Run each fuzz target briefly (FUZZTIME per target, default 10s).
	go test -run '^$$' -fuzz FuzzAdmitWorkloadPolicy -fuzztime $(or $(FUZZTIME),10s) ./internal/policy/
	go test -run '^$$' -fuzz FuzzClassify -fuzztime $(or $(FUZZTIME),10s) ./internal/proxy/
	go test -run '^$$' -fuzz FuzzHandshakeInput -fuzztime $(or $(FUZZTIME),10s) ./internal/proxy/

.PHONY: controlplane
controlplane: ## Build (once) and cache kube-apiserver, kube-controller-manager, etcd, kubectl and the cert-manager runner.
	hack/build-controlplane.sh $(K8S_VERSION) $(ETCD_VERSION) >/dev/null
	go run ./internal/testenv/cmd/localcp --prepare

.PHONY: manifests
manifests: ## Generate CRDs and RBAC from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=meshtls-operator webhook paths=./...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: bundle
bundle: manifests ## Generate the OLM bundle (bundle/) from config/default and config/samples.
	go run ./hack/bundle

.PHONY: verify
verify: manifests generate ## Fail when generated files are stale.
	git diff --exit-code -- api config

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

##@ Build

.PHONY: build
build: ## Build the manager binary into bin/.
	go build -o bin/manager ./cmd/manager

.PHONY: bundle-build
bundle-build: ## Build the bundle image (needs a Docker engine).
	docker build -f bundle.Dockerfile -t $(IMG)-bundle .

.PHONY: docker-build
docker-build: ## Build the manager and proxy images (needs a Docker engine with BuildKit).
	docker build --target manager -t $(IMG) .
	docker build --target proxy -t $(PROXY_IMG) .

.PHONY: docker-push
docker-push: ## Push both images.
	docker push $(IMG)
	docker push $(PROXY_IMG)

##@ Deployment

.PHONY: install
install: ## Install the CRDs into the current kubeconfig's cluster.
	$(KUBEBUILDER_ASSETS)/kubectl apply --server-side -k config/crd

.PHONY: deploy
deploy: ## Deploy the operator into the current kubeconfig's cluster (needs cert-manager).
	$(KUBEBUILDER_ASSETS)/kubectl apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## Remove the operator, its CRDs (and every policy) and what it made, from the current kubeconfig's cluster.
	$(KUBEBUILDER_ASSETS)/kubectl delete mutatingwebhookconfiguration meshtls-injector --ignore-not-found
	$(KUBEBUILDER_ASSETS)/kubectl delete validatingwebhookconfiguration meshtls-policy-validation --ignore-not-found
	$(KUBEBUILDER_ASSETS)/kubectl delete -k config/default --ignore-not-found --wait
	$(KUBEBUILDER_ASSETS)/kubectl delete configmaps,rolebindings.rbac.authorization.k8s.io,certificates.cert-manager.io -A -l app.kubernetes.io/managed-by=meshtls-operator --ignore-not-found
