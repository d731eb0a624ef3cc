package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"k8s.io/apimachinery/pkg/types"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// ProxyConfigSpec is the PodProxyConfig spec of a resolved pod, configHash included.
func ProxyConfigSpec(r Result) v1alpha1.PodProxyConfigSpec {
	sa := r.Pod.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	spec := v1alpha1.PodProxyConfigSpec{
		PodUID:                   types.UID(r.Pod.UID),
		ServiceAccountName:       sa,
		Identity:                 identity.SPIFFEID(r.TrustDomain, r.Pod.Namespace, sa),
		TrustBundleConfigMapName: identity.TrustBundleConfigMapName,
		Inbound:                  v1alpha1.InboundConfig{Mode: r.Mode},
		Decision:                 r.Decision,
	}
	if r.HasIssuer {
		spec.CertificateSecretName = identity.CertificateSecretName(sa)
	}
	for _, p := range r.Ports {
		spec.Inbound.Ports = append(spec.Inbound.Ports, v1alpha1.PortMTLS{Port: p.Port, Mode: p.Mode})
	}
	spec.Inbound.UncapturedPorts = r.Uncaptured
	spec.ConfigHash = ConfigHash(spec)
	// After the hash: whether the pod carries a sidecar is an observation, not
	// configuration the proxy applies.
	spec.Sidecar = v1alpha1.SidecarInjected
	if !r.Pod.Sidecar {
		spec.Sidecar = v1alpha1.SidecarMissing
	}
	return spec
}

// ConfigHash is "sha256:" and the hex SHA-256 of the spec's JSON without its hash
// and without the observations that follow it (sidecar, certificate).
func ConfigHash(spec v1alpha1.PodProxyConfigSpec) string {
	spec.ConfigHash = ""
	spec.Sidecar, spec.Certificate = "", nil
	b, err := json.Marshal(spec)
	if err != nil {
		// A struct of strings, ints and slices always marshals.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
