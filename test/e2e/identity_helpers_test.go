package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkWorkloadLeaf checks a workload certificate as a peer proxy would: tlsCrt (the
// Secret's tls.crt: the leaf, then any intermediates) must carry exactly one SAN, the
// URI spiffeID, be usable for client and server auth, and chain to a CA of bundlePEM
// (the namespace's trust bundle), not to whatever ca.crt the Secret holds.
func checkWorkloadLeaf(tlsCrt, bundlePEM []byte, spiffeID string) error {
	certs, err := parsePEMCerts(tlsCrt)
	if err != nil {
		return fmt.Errorf("tls.crt: %w", err)
	}
	leaf := certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
		return fmt.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, spiffeID)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		return fmt.Errorf("want no SAN but the SPIFFE ID; DNS %v, IP %v, email %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		return fmt.Errorf("the workload certificate is a CA")
	}
	roots, err := parsePEMCerts(bundlePEM)
	if err != nil {
		return fmt.Errorf("trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("the leaf does not chain to the trust bundle (%d CA certificates) for usage %v: %w", len(roots), usage, err)
		}
	}
	return nil
}

// parsePEMCerts parses every CERTIFICATE block of b; it fails on none.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return out, nil
}

// conditionTrue says why condition typ of conds is not True, or nil when it is.
func conditionTrue(conds []metav1.Condition, typ string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition", typ)
	}
	if c.Status != metav1.ConditionTrue {
		return fmt.Errorf("%s=%s (%s): %s", typ, c.Status, c.Reason, c.Message)
	}
	return nil
}

// certificateReady says why a cert-manager Certificate is not Ready, or nil when it is.
func certificateReady(cert *cmapi.Certificate) error {
	for _, c := range cert.Status.Conditions {
		if c.Type == cmapi.CertificateConditionReady {
			if c.Status == cmmeta.ConditionTrue {
				return nil
			}
			return fmt.Errorf("Certificate %s/%s: Ready=%s (%s): %s", cert.Namespace, cert.Name, c.Status, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("Certificate %s/%s has no Ready condition yet", cert.Namespace, cert.Name)
}
