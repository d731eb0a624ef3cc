// Package identity holds the naming rules of workload identities: SPIFFE IDs, and the
// names of the Certificate, Secret and trust-bundle ConfigMap the operator keeps for
// them. Pure functions only.
package identity

// DefaultTrustDomain is the trust domain when the mesh names none (or there is no
// MeshMTLSPolicy).
const DefaultTrustDomain = "cluster.local"

// TrustBundleConfigMapName is the ConfigMap, in every meshed namespace, that holds
// the trust anchors under the key ca.crt.
const TrustBundleConfigMapName = "meshtls-trust-bundle"

// SPIFFEID is spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// CertificateName is the cert-manager Certificate of a ServiceAccount.
func CertificateName(serviceAccount string) string { return "meshtls-" + serviceAccount }

// CertificateSecretName is the Secret that Certificate writes.
func CertificateSecretName(serviceAccount string) string {
	return "meshtls-" + serviceAccount + "-tls"
}
