# syntax=docker/dockerfile:1
# Two images from one build context, one target each (needs a Docker engine with BuildKit):
#
#   docker build --target manager -t ghcr.io/meshtls/meshtls-operator:dev .   # the default (last) stage
#   docker build --target proxy   -t ghcr.io/meshtls/meshtls-proxy:dev .      # the injected sidecar and capture step
#
# Both are distroless (no shell, no package manager), run as the non-root user 65532
# unless the pod says otherwise (the injector runs the proxy as --proxy-uid, and the
# capture step as root with NET_ADMIN only), and write nothing to their root
# filesystem: run them with readOnlyRootFilesystem. BuildKit builds only the stages a
# target needs, so each image compiles only its own binary.
#
# test/manifests/dockerfile_test.go copies exactly what the COPY lines below name (less
# .dockerignore) into an empty directory and runs the same `go build`s there, so this
# file cannot drift from the tree.
FROM golang:1.26 AS source
WORKDIR /workspace
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY webhooks/ webhooks/
COPY internal/ internal/

FROM source AS build-manager
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w" -o manager ./cmd/manager

FROM source AS build-proxy
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w" -o meshtls-proxy ./cmd/proxy

# meshtls-proxy: `meshtls-proxy proxy` (the sidecar) and `meshtls-proxy capture` (the
# init step that redirects the pod's TCP to the proxy).
FROM gcr.io/distroless/static:nonroot AS proxy
COPY --from=build-proxy /workspace/meshtls-proxy /meshtls-proxy
USER 65532:65532
ENTRYPOINT ["/meshtls-proxy"]

# The manager (the operator): the default target.
FROM gcr.io/distroless/static:nonroot AS manager
COPY --from=build-manager /workspace/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
