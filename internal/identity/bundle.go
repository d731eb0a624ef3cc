package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// ParseCAs parses PEM data that may hold only CA certificates: at least one
// CERTIFICATE block, each one a certificate with CA rights (basic constraints CA=true).
// Text between blocks is ignored (bundles often carry comments); any other block type
// (a private key, above all) is refused. Errors never quote the data.
func ParseCAs(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for i := 1; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE: a trust bundle holds CA certificates only", i, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d is not a valid X.509 certificate: %v", i, err)
		}
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, fmt.Errorf("certificate %d (subject %q, SHA-256 fingerprint %s) is not a CA certificate: a trust bundle holds CA certificates only, not workload or server certificates",
				i, cert.Subject.String(), Fingerprint(cert))
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, errors.New("it holds no PEM CERTIFICATE block: put the PEM-encoded CA certificates (-----BEGIN CERTIFICATE-----) under the key")
	}
	return out, nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER, shortened to 16 digits for
// messages.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}

// EncodeBundle is the PEM bundle of certs, deduplicated (by DER) and sorted (by
// subject, then validity, then DER) so that the same set always gives the same bytes
// and the ConfigMaps are never rewritten for nothing.
func EncodeBundle(certs []*x509.Certificate) []byte {
	sorted := slices.Clone(certs)
	slices.SortFunc(sorted, func(a, b *x509.Certificate) int {
		if c := strings.Compare(a.Subject.String(), b.Subject.String()); c != 0 {
			return c
		}
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return bytes.Compare(a.Raw, b.Raw)
	})
	sorted = slices.CompactFunc(sorted, func(a, b *x509.Certificate) bool { return bytes.Equal(a.Raw, b.Raw) })
	var buf bytes.Buffer
	for _, c := range sorted {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// TrustBundleInput is what the mesh spec.trustBundle names, as found.
type TrustBundleInput struct {
	// Ref names it for messages: "ConfigMap meshtls-system/mesh-roots, key ca.crt".
	Ref string
	// Found is false when the ConfigMap does not exist.
	Found bool
	// Data is the value of the key; nil when the ConfigMap lacks the key.
	Data *string
}

// BundleInput is everything the trust bundle is made from.
type BundleInput struct {
	// TrustBundle is the mesh spec.trustBundle; nil when the mesh sets none.
	TrustBundle *TrustBundleInput
	// RequestCAs are the status.ca values of the mesh's issued CertificateRequests, in
	// any order, repeats allowed: the CAs that signed the workload certificates pods
	// hold now.
	RequestCAs []string
	// Issued counts the mesh's issued CertificateRequests, with or without a CA.
	Issued int
}

// BundleResult is the assembled bundle, or why there is none.
type BundleResult struct {
	// PEM is the bundle; nil when there is none to write, in which case every
	// namespace keeps the bundle it holds (a bad input never removes trust anchors).
	PEM []byte
	// CAs is the number of certificates in PEM.
	CAs int
	// Reason and Message explain a missing bundle (a TrustBundleReady reason), or,
	// with a bundle, Message may note status.ca values that were ignored.
	Reason, Message string
}

// AssembleBundle makes the trust bundle: the CA certificates of spec.trustBundle, when
// set, plus the CAs cert-manager reported for the mesh's current certificate requests.
//
// Keeping the reported CAs even when spec.trustBundle is set is what makes a root
// rotation safe: a root removed from spec.trustBundle stays in the bundle for as long
// as some workload certificate signed under it is still current, and drops out once
// cert-manager has re-issued them all. A spec.trustBundle that cannot be used is
// refused whole: the bundle is then nil and the namespaces keep what they hold.
func AssembleBundle(in BundleInput) BundleResult {
	var certs []*x509.Certificate
	if tb := in.TrustBundle; tb != nil {
		if !tb.Found {
			return BundleResult{Reason: v1alpha1.ReasonInvalidTrustBundle, Message: fmt.Sprintf(
				"spec.trustBundle names %s, which does not exist: create it with the PEM CA certificates to trust, or remove spec.trustBundle; the namespaces keep their current bundle", tb.Ref)}
		}
		if tb.Data == nil {
			return BundleResult{Reason: v1alpha1.ReasonInvalidTrustBundle, Message: fmt.Sprintf(
				"spec.trustBundle names %s, but the ConfigMap has no such key: put the PEM CA certificates under it, or fix spec.trustBundle.configMapRef.key; the namespaces keep their current bundle", tb.Ref)}
		}
		roots, err := ParseCAs([]byte(*tb.Data))
		if err != nil {
			return BundleResult{Reason: v1alpha1.ReasonInvalidTrustBundle, Message: fmt.Sprintf(
				"spec.trustBundle %s is refused: %v; the namespaces keep their current bundle", tb.Ref, err)}
		}
		certs = roots
	}

	distinct := slices.Clone(in.RequestCAs)
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	ignored := 0
	reported := 0
	for _, ca := range distinct {
		if strings.TrimSpace(ca) == "" {
			continue
		}
		parsed, err := ParseCAs([]byte(ca))
		if err != nil {
			ignored++
			continue
		}
		reported++
		certs = append(certs, parsed...)
	}
	if in.TrustBundle == nil && reported == 0 {
		if in.Issued == 0 {
			return BundleResult{Reason: v1alpha1.ReasonWaitingForCA, Message: "no workload certificate is issued yet; the trust bundle is made from the CA certificate cert-manager reports with the first one"}
		}
		msg := fmt.Sprintf("the issuer reported no CA certificate (CertificateRequest status.ca) for %d issued workload certificates, as some ACME and external issuers do: set spec.trustBundle.configMapRef to a ConfigMap in the operator namespace that holds the issuer's root CA certificates", in.Issued)
		if ignored > 0 {
			msg = fmt.Sprintf("the issuer reported %d status.ca values that are not CA certificates, and no usable one: set spec.trustBundle.configMapRef to a ConfigMap in the operator namespace that holds the issuer's root CA certificates", ignored)
		}
		return BundleResult{Reason: v1alpha1.ReasonNoCA, Message: msg}
	}
	pemBytes := EncodeBundle(certs)
	out := BundleResult{PEM: pemBytes, CAs: bytes.Count(pemBytes, []byte("-----BEGIN CERTIFICATE-----"))}
	if ignored > 0 {
		out.Message = fmt.Sprintf("ignored %d CertificateRequest status.ca values that are not CA certificates", ignored)
	}
	return out
}

// SameIssuer reports whether ref, as a Certificate or CertificateRequest holds it,
// names the mesh issuer mesh (the policy's issuerRef with its defaults, IssuerRef).
// cert-manager reads an empty group as cert-manager.io and, in that group, an empty
// kind as Issuer; ref is read the same way. For kind Issuer the name is that of an
// Issuer in the object's own namespace, so the caller must also know that namespace
// is meshed.
func SameIssuer(mesh, ref cmmeta.IssuerReference) bool {
	if ref.Group == "" {
		ref.Group = DefaultIssuerGroup
	}
	if ref.Kind == "" && ref.Group == DefaultIssuerGroup {
		ref.Kind = "Issuer"
	}
	return mesh.Name != "" && ref.Name == mesh.Name && ref.Kind == mesh.Kind && ref.Group == mesh.Group
}

// RequestTrusted reports whether an issued CertificateRequest's status.ca may enter
// the trust bundle. Labels prove nothing (anyone may set them, and cert-manager copies
// a Certificate's labels onto its requests), so a request counts only when all hold:
//
//   - it asks the mesh issuer (spec.issuerRef, SameIssuer);
//   - its controller is owner, the Certificate it names by UID, in its namespace;
//   - owner is the operator's workload Certificate of a ServiceAccount (Owned, and
//     named CertificateName of that ServiceAccount), in a namespace that is meshed;
//   - owner asks the mesh issuer too, so a request of an issuer that someone wrote
//     into the operator's Certificate (before the operator puts it back) never counts.
//
// mesh is the mesh issuerRef with defaults (IssuerRef); owner may be nil.
func RequestTrusted(mesh cmmeta.IssuerReference, req *cmapi.CertificateRequest, owner *cmapi.Certificate, ownerNamespaceMeshed bool) bool {
	if req == nil || owner == nil || !ownerNamespaceMeshed || owner.Namespace != req.Namespace {
		return false
	}
	ref := metav1.GetControllerOf(req)
	if ref == nil || ref.Kind != cmapi.CertificateKind || ref.APIVersion != cmapi.SchemeGroupVersion.String() ||
		ref.UID != owner.UID || ref.Name != owner.Name {
		return false
	}
	sa := owner.Annotations[ServiceAccountAnnotation]
	if sa == "" || !Owned(owner, sa) || owner.Name != CertificateName(sa) {
		return false
	}
	return SameIssuer(mesh, owner.Spec.IssuerRef) && SameIssuer(mesh, req.Spec.IssuerRef)
}
