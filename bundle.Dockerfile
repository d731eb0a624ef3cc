# The OLM bundle image: `docker build -f bundle.Dockerfile -t <registry>/meshtls-operator-bundle:v0.1.0 .`
FROM scratch
LABEL operators.operatorframework.io.bundle.mediatype.v1=registry+v1
LABEL operators.operatorframework.io.bundle.manifests.v1=manifests/
LABEL operators.operatorframework.io.bundle.metadata.v1=metadata/
LABEL operators.operatorframework.io.bundle.package.v1=meshtls-operator
LABEL operators.operatorframework.io.bundle.channels.v1=alpha
LABEL operators.operatorframework.io.bundle.channel.default.v1=alpha
COPY bundle/manifests /manifests/
COPY bundle/metadata /metadata/
