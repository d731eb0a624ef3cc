// Package identity holds the rules of workload identities, as pure functions: SPIFFE
// IDs (built and parsed by the SPIFFE spec), the names of the Certificate, Secret and
// trust-bundle ConfigMap the operator keeps for a ServiceAccount, the cert-manager
// Certificate it asks for, what that Certificate's state means for the pods that
// wait on it, and the trust bundle assembled from PEM sources.
//
// Nothing here talks to an API server or reads a clock: the controllers gather, these
// functions decide, and the tests need no cluster.
package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain when the mesh names none (or there is no
// MeshMTLSPolicy).
const DefaultTrustDomain = "cluster.local"

// TrustBundleConfigMapName is the ConfigMap, in every meshed namespace, that holds
// the trust anchors under the key TrustBundleKey.
const TrustBundleConfigMapName = "meshtls-trust-bundle"

// TrustBundleKey is the key of the PEM bundle in the trust-bundle ConfigMap.
const TrustBundleKey = "ca.crt"

// ProxyRoleName is the installed ClusterRole of the proxies (config/rbac/proxy_role.yaml),
// and the name of the RoleBinding to it in each meshed namespace.
const ProxyRoleName = "meshtls-proxy"

// Ownership marks. Everything the operator creates carries the managed-by label; a
// workload Certificate also names the ServiceAccount it is for, so a Certificate of
// the right name made for another account (or by someone else) is never taken for
// ours. The label values equal those of package controllers.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "meshtls-operator"
	// ServiceAccountAnnotation is on each workload Certificate the operator creates.
	ServiceAccountAnnotation = "meshtls.io/service-account"
)

// SPIFFE limits (SPIFFE-ID.md, sections 2.1 and 2.3): a trust domain of at most 255
// bytes, an ID of at most 2048 bytes.
const (
	MaxTrustDomainLength = 255
	MaxIDLength          = 2048
)

// SPIFFEID is spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>. It assumes
// valid parts (the API validates the trust domain; namespaces and ServiceAccounts are
// DNS names); NewWorkloadID checks them.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// WorkloadID is the identity of the pods of one ServiceAccount.
type WorkloadID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String is the SPIFFE ID.
func (w WorkloadID) String() string { return SPIFFEID(w.TrustDomain, w.Namespace, w.ServiceAccount) }

// ValidateTrustDomain checks a trust domain name: 1-255 bytes of a-z, 0-9, '.', '-'
// and '_' (SPIFFE-ID.md 2.1: no upper case, no port, no userinfo).
func ValidateTrustDomain(td string) error {
	if len(td) > MaxTrustDomainLength {
		return fmt.Errorf("trust domain %.40q... is %d bytes long; SPIFFE allows at most %d", td, len(td), MaxTrustDomainLength)
	}
	if _, err := spiffeid.TrustDomainFromString(td); err != nil || td == "" || strings.Contains(td, ":") {
		return fmt.Errorf("trust domain %q is not valid: use lower-case letters, digits, '.', '-' and '_' only, e.g. cluster.local", td)
	}
	return nil
}

// NewWorkloadID builds and checks the SPIFFE ID of a ServiceAccount.
func NewWorkloadID(trustDomain, namespace, serviceAccount string) (WorkloadID, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return WorkloadID{}, err
	}
	for _, part := range []struct{ what, value string }{{"namespace", namespace}, {"service account", serviceAccount}} {
		if err := spiffeid.ValidatePathSegment(part.value); err != nil {
			return WorkloadID{}, fmt.Errorf("%s %q cannot be a SPIFFE path segment: %v", part.what, part.value, err)
		}
	}
	w := WorkloadID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if n := len(w.String()); n > MaxIDLength {
		return WorkloadID{}, fmt.Errorf("SPIFFE ID of service account %s/%s is %d bytes long; SPIFFE allows at most %d", namespace, serviceAccount, n, MaxIDLength)
	}
	return w, nil
}

// ErrNotWorkloadID is wrapped by ParseWorkloadID when a valid SPIFFE ID does not have
// the /ns/<namespace>/sa/<serviceaccount> shape.
var ErrNotWorkloadID = errors.New("not a workload ID of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")

// ParseWorkloadID parses a workload SPIFFE ID, strictly: the spiffe scheme in lower
// case, a valid trust domain (no port, no userinfo), a path of exactly the segments
// ns, <namespace>, sa, <service account> with SPIFFE path characters only (no empty,
// "." or ".." segment, no percent-encoding), no query and no fragment, and the SPIFFE
// length limits.
func ParseWorkloadID(s string) (WorkloadID, error) {
	if len(s) > MaxIDLength {
		return WorkloadID{}, fmt.Errorf("SPIFFE ID is %d bytes long; SPIFFE allows at most %d", len(s), MaxIDLength)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return WorkloadID{}, fmt.Errorf("%.80q is not a SPIFFE ID: %w", s, err)
	}
	td := id.TrustDomain().Name()
	if len(td) > MaxTrustDomainLength {
		return WorkloadID{}, fmt.Errorf("SPIFFE ID trust domain is %d bytes long; SPIFFE allows at most %d", len(td), MaxTrustDomainLength)
	}
	segments := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segments) != 4 || segments[0] != "ns" || segments[2] != "sa" {
		return WorkloadID{}, fmt.Errorf("%.80q: %w", s, ErrNotWorkloadID)
	}
	return WorkloadID{TrustDomain: td, Namespace: segments[1], ServiceAccount: segments[3]}, nil
}
