package identity

import (
	"fmt"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Defaults of the mesh certificate settings, for a spec read before the API server
// defaulted it (the CRD schema holds the same values).
const (
	DefaultDuration    = 24 * time.Hour
	DefaultRenewBefore = 8 * time.Hour
	DefaultIssuerKind  = "ClusterIssuer"
	DefaultIssuerGroup = "cert-manager.io"
)

// Usages are the key usages of every workload certificate: a TLS server and a TLS
// client, with a signing key. Nothing else: a workload certificate can sign no
// certificate and encipher no key.
var Usages = []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth, cmapi.UsageClientAuth}

// revisionHistoryLimit keeps one old CertificateRequest per Certificate (cert-manager's
// default, written out because the trust bundle depends on it): the CA that signed
// the leaf a pod may still hold stays visible until the next one replaces it.
const revisionHistoryLimit = 1

// Certificate is the cert-manager Certificate for a ServiceAccount under the mesh
// policy spec: exactly one URI SAN (the SPIFFE ID), no DNS name, IP, e-mail or common
// name, server and client auth, a new private key at every issuance.
func Certificate(mesh v1alpha1.MeshMTLSPolicySpec, namespace, serviceAccount string) *cmapi.Certificate {
	settings := mesh.Certificate
	duration := metav1.Duration{Duration: DefaultDuration}
	if settings.Duration != nil {
		duration = *settings.Duration
	}
	renewBefore := metav1.Duration{Duration: DefaultRenewBefore}
	if settings.RenewBefore != nil {
		renewBefore = *settings.RenewBefore
	}
	return &cmapi.Certificate{
		TypeMeta: metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
		ObjectMeta: metav1.ObjectMeta{
			Name:        CertificateName(serviceAccount),
			Namespace:   namespace,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{ServiceAccountAnnotation: serviceAccount},
		},
		Spec: cmapi.CertificateSpec{
			SecretName:           CertificateSecretName(serviceAccount),
			URIs:                 []string{SPIFFEID(mesh.TrustDomain, namespace, serviceAccount)},
			Duration:             &duration,
			RenewBefore:          &renewBefore,
			Usages:               slices.Clone(Usages),
			IssuerRef:            IssuerRef(mesh.IssuerRef),
			PrivateKey:           privateKey(settings.PrivateKey),
			RevisionHistoryLimit: ptr.To[int32](revisionHistoryLimit),
		},
	}
}

// IssuerRef is the mesh issuer with its defaults filled in.
func IssuerRef(ref v1alpha1.IssuerReference) cmmeta.IssuerReference {
	out := cmmeta.IssuerReference{Name: ref.Name, Kind: ref.Kind, Group: ref.Group}
	if out.Kind == "" {
		out.Kind = DefaultIssuerKind
	}
	if out.Group == "" {
		out.Group = DefaultIssuerGroup
	}
	return out
}

func privateKey(k v1alpha1.PrivateKeySettings) *cmapi.CertificatePrivateKey {
	out := &cmapi.CertificatePrivateKey{RotationPolicy: cmapi.RotationPolicyAlways}
	switch k.Algorithm {
	case v1alpha1.RSAKeyAlgorithm:
		out.Algorithm, out.Size = cmapi.RSAKeyAlgorithm, int(k.Size)
		if out.Size == 0 {
			out.Size = 2048
		}
	case v1alpha1.Ed25519KeyAlgorithm:
		out.Algorithm = cmapi.Ed25519KeyAlgorithm
	default:
		out.Algorithm, out.Size = cmapi.ECDSAKeyAlgorithm, int(k.Size)
		if out.Size == 0 {
			out.Size = 256
		}
	}
	return out
}

// Owned reports whether a Certificate is the operator's, for this ServiceAccount: it
// carries the managed-by label and names the ServiceAccount. Anything else with the
// name is someone else's and is never changed or deleted.
func Owned(cert *cmapi.Certificate, serviceAccount string) bool {
	return cert != nil && cert.Labels[ManagedByLabel] == ManagedByValue &&
		cert.Annotations[ServiceAccountAnnotation] == serviceAccount
}

// NeedsUpdate reports whether an owned Certificate differs from want in anything the
// operator sets, or carries an identity the operator never asks for (extra SANs, a
// common name, a subject, CA rights) that someone added by hand.
func NeedsUpdate(current, want *cmapi.Certificate) bool {
	c, w := current.Spec, want.Spec
	if c.SecretName != w.SecretName || !slices.Equal(c.URIs, w.URIs) || !durationEqual(c.Duration, w.Duration) ||
		!durationEqual(c.RenewBefore, w.RenewBefore) || c.IssuerRef != w.IssuerRef ||
		!slices.Equal(c.Usages, w.Usages) || !ptr.Equal(c.RevisionHistoryLimit, w.RevisionHistoryLimit) {
		return true
	}
	if c.PrivateKey == nil || c.PrivateKey.Algorithm != w.PrivateKey.Algorithm || c.PrivateKey.Size != w.PrivateKey.Size ||
		c.PrivateKey.RotationPolicy != w.PrivateKey.RotationPolicy {
		return true
	}
	if len(c.DNSNames) > 0 || len(c.IPAddresses) > 0 || len(c.EmailAddresses) > 0 || len(c.OtherNames) > 0 ||
		c.CommonName != "" || c.LiteralSubject != "" || c.Subject != nil || c.IsCA {
		return true
	}
	for k, v := range want.Labels {
		if current.Labels[k] != v {
			return true
		}
	}
	for k, v := range want.Annotations {
		if current.Annotations[k] != v {
			return true
		}
	}
	return false
}

// ForeignIdentity reports whether an owned Certificate carries identity fields the
// operator never sets (server-side apply cannot remove fields another manager owns,
// so those need a full update).
func ForeignIdentity(cert *cmapi.Certificate) bool {
	s := cert.Spec
	return len(s.DNSNames) > 0 || len(s.IPAddresses) > 0 || len(s.EmailAddresses) > 0 || len(s.OtherNames) > 0 ||
		s.CommonName != "" || s.LiteralSubject != "" || s.Subject != nil || s.IsCA || len(s.URIs) > 1
}

func durationEqual(a, b *metav1.Duration) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Duration == b.Duration
}

// Reasons of a PodProxyConfig's spec.certificate besides cert-manager's own.
const (
	// ReasonPending: the Certificate is not created yet, is being changed, or
	// cert-manager has not reported on its current spec.
	ReasonPending = "Pending"
	// ReasonNotOwned: a Certificate of this name exists that the operator did not
	// create for this ServiceAccount; it is left alone.
	ReasonNotOwned = "NotOwned"
)

func condition(cert *cmapi.Certificate, typ cmapi.CertificateConditionType) *cmapi.CertificateCondition {
	for i := range cert.Status.Conditions {
		if cert.Status.Conditions[i].Type == typ {
			return &cert.Status.Conditions[i]
		}
	}
	return nil
}

// State is what the pods of a ServiceAccount learn of their certificate: cert (nil when
// absent) under its expected name, for the identity spiffeID. Ready only when the
// Certificate is the operator's, asks for exactly spiffeID, and cert-manager reports
// it Ready for its current generation.
func State(cert *cmapi.Certificate, serviceAccount, spiffeID string) v1alpha1.CertificateState {
	name := CertificateName(serviceAccount)
	st := v1alpha1.CertificateState{Name: name, Reason: ReasonPending}
	switch {
	case cert == nil:
		// The same words as a Certificate cert-manager has not issued yet: to the pod
		// both mean "waiting for issuance", and one wording saves every new pod of a
		// new ServiceAccount a PodProxyConfig write when its Certificate appears.
		st.Message = fmt.Sprintf("waiting for cert-manager to issue Certificate %s", name)
		return st
	case !Owned(cert, serviceAccount):
		st.Reason = ReasonNotOwned
		st.Message = fmt.Sprintf("Certificate %s/%s exists but was not created by meshtls-operator for service account %s; it is left alone. Delete or rename it and the operator issues this identity",
			cert.Namespace, name, serviceAccount)
		return st
	case cert.DeletionTimestamp != nil:
		st.Message = fmt.Sprintf("Certificate %s is being deleted", name)
		return st
	case !slices.Equal(cert.Spec.URIs, []string{spiffeID}):
		st.Message = fmt.Sprintf("Certificate %s is being changed to the identity %s", name, spiffeID)
		return st
	}
	if failed, reason, message := IssuanceFailed(cert); failed {
		st.Reason, st.Message = reason, truncate(message, 1024)
		return st
	}
	ready := condition(cert, cmapi.CertificateConditionReady)
	switch {
	case ready == nil:
		st.Message = fmt.Sprintf("waiting for cert-manager to issue Certificate %s", name)
	case ready.ObservedGeneration < cert.Generation:
		st.Message = fmt.Sprintf("waiting for cert-manager to issue Certificate %s for its current spec", name)
	default:
		st.Ready = ready.Status == cmmeta.ConditionTrue
		st.Reason, st.Message = truncate(ready.Reason, 128), truncate(ready.Message, 1024)
		if st.Reason == "" {
			st.Reason = ReasonPending
		}
	}
	return st
}

// IssuanceFailed reports cert-manager's reason and message when its last attempt to
// issue a Certificate failed: cert-manager then sets Issuing=False with the failed
// CertificateRequest's reason (Failed, Denied, ...) and retries with back-off. Issuing
// False with reason Issued marks a finished issuance instead.
func IssuanceFailed(cert *cmapi.Certificate) (failed bool, reason, message string) {
	issuing := condition(cert, cmapi.CertificateConditionIssuing)
	if issuing == nil || issuing.Status != cmmeta.ConditionFalse || issuing.Reason == "Issued" {
		return false, "", ""
	}
	return true, issuing.Reason, issuing.Message
}

// FailureTime identifies the current issuance failure (zero when none), to tell a
// failure already reported from a new one: cert-manager's lastFailureTime.
func FailureTime(cert *cmapi.Certificate) time.Time {
	if failed, _, _ := IssuanceFailed(cert); !failed {
		return time.Time{}
	}
	if cert.Status.LastFailureTime != nil {
		return cert.Status.LastFailureTime.Time
	}
	if c := condition(cert, cmapi.CertificateConditionIssuing); c.LastTransitionTime != nil {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

// Health classifies one needed Certificate for the mesh status counts.
type Health int

const (
	// Failing: not Ready (pending, failed) or held by someone else.
	Failing Health = iota
	// Ready: cert-manager reports it Ready for the current identity.
	Ready
	// Expiring: Ready, but past the time cert-manager should have renewed it.
	Expiring
)

// HealthOf classifies the state of one needed Certificate at now; when it is Ready,
// recheck is when it would turn Expiring (zero when not applicable).
func HealthOf(cert *cmapi.Certificate, st v1alpha1.CertificateState, now time.Time) (h Health, recheck time.Time) {
	if !st.Ready {
		return Failing, time.Time{}
	}
	renewBy := RenewalTime(cert)
	if renewBy.IsZero() {
		return Ready, time.Time{}
	}
	if !now.Before(renewBy) {
		return Expiring, time.Time{}
	}
	return Ready, renewBy
}

// RenewalTime is when cert-manager should renew a Certificate: status.renewalTime,
// else notAfter minus renewBefore; zero when unknown.
func RenewalTime(cert *cmapi.Certificate) time.Time {
	if cert.Status.RenewalTime != nil {
		return cert.Status.RenewalTime.Time
	}
	if cert.Status.NotAfter == nil {
		return time.Time{}
	}
	before := DefaultRenewBefore
	if cert.Spec.RenewBefore != nil {
		before = cert.Spec.RenewBefore.Duration
	}
	return cert.Status.NotAfter.Add(-before)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
