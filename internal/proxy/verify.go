package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// PeerRole says which side of the handshake the peer was, which decides the
// extended key usage its chain must allow.
type PeerRole int

const (
	// PeerClient: we are the server (inbound); the peer presented a client certificate.
	PeerClient PeerRole = iota
	// PeerServer: we are the client (outbound); the peer is the server.
	PeerServer
)

// PeerPolicy is what a peer's certificate chain is checked against.
type PeerPolicy struct {
	// TrustDomain is the mesh trust domain; the peer's SPIFFE ID must be in it.
	TrustDomain spiffeid.TrustDomain
	// Roots are the trust anchors (the trust bundle).
	Roots *x509.CertPool
	// Now is the time the chain must be valid at (a parameter: this function is pure).
	Now time.Time
	// Role is the peer's side of the handshake.
	Role PeerRole
	// Expected, when set, is the exact SPIFFE ID the peer must have (outbound: the
	// identity configured for the destination).
	Expected spiffeid.ID
}

// VerifyPeer is the access decision for a peer: it returns the peer's SPIFFE ID, or
// an error saying exactly which rule the chain broke. certs is the chain as the peer
// sent it, leaf first. It checks what the SPIFFE X.509-SVID specification asks of a
// leaf, more strictly than go-spiffe's x509svid.Verify (which accepts leaves without
// digitalSignature, with the wrong extended key usage, or with a trust-domain-only
// ID): exactly one URI SAN, a SPIFFE ID with a non-empty path in the trust domain,
// digitalSignature, serverAuth and clientAuth, not a CA, no keyCertSign or cRLSign,
// and a chain to the roots valid at Now. It is pure: no clock, no I/O.
func VerifyPeer(certs []*x509.Certificate, p PeerPolicy) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("the peer presented no certificate")
	}
	if p.Roots == nil {
		return spiffeid.ID{}, errors.New("no trust bundle is loaded")
	}
	if p.TrustDomain.IsZero() {
		return spiffeid.ID{}, errors.New("the mesh trust domain is not known yet")
	}
	leaf := certs[0]
	// Not a CA: a CA certificate presented as a leaf could mint identities.
	if leaf.IsCA {
		return spiffeid.ID{}, errors.New("the peer's leaf certificate is a CA (basicConstraints CA:TRUE)")
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return spiffeid.ID{}, errors.New("the peer's leaf certificate has keyCertSign or cRLSign")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return spiffeid.ID{}, errors.New("the peer's leaf certificate lacks the digitalSignature key usage")
	}
	var serverAuth, clientAuth bool
	for _, u := range leaf.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			serverAuth = true
		case x509.ExtKeyUsageClientAuth:
			clientAuth = true
		}
	}
	if !serverAuth || !clientAuth {
		return spiffeid.ID{}, fmt.Errorf("the peer's leaf certificate must have both serverAuth and clientAuth extended key usages (serverAuth=%t clientAuth=%t)", serverAuth, clientAuth)
	}
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("the peer's leaf certificate must have exactly one URI SAN, it has %d", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("the peer's URI SAN %q is not a SPIFFE ID: %v", leaf.URIs[0].String(), err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("the peer's SPIFFE ID %q has no path (a trust domain alone names no workload)", id)
	}
	if !id.MemberOf(p.TrustDomain) {
		return spiffeid.ID{}, fmt.Errorf("the peer's SPIFFE ID %q is not in the trust domain %q", id, p.TrustDomain)
	}
	if !p.Expected.IsZero() && id != p.Expected {
		return spiffeid.ID{}, fmt.Errorf("unexpected peer SPIFFE ID, exp=%q got=%q", p.Expected, id)
	}
	usage := x509.ExtKeyUsageClientAuth
	if p.Role == PeerServer {
		usage = x509.ExtKeyUsageServerAuth
	}
	var intermediates *x509.CertPool
	if len(certs) > 1 {
		intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         p.Roots,
		Intermediates: intermediates,
		CurrentTime:   p.Now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return spiffeid.ID{}, fmt.Errorf("the peer's certificate of %q does not chain to the trust bundle: %v", id, err)
	}
	return id, nil
}
