package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
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
	id, _, err := verifyPeer(certs, p)
	return id, err
}

// validity is when a verified chain is valid: the intersection of its
// certificates' validity periods.
type validity struct{ notBefore, notAfter time.Time }

func verifyPeer(certs []*x509.Certificate, p PeerPolicy) (spiffeid.ID, validity, error) {
	id, err := checkLeaf(certs, p)
	if err != nil {
		return spiffeid.ID{}, validity{}, err
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
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         p.Roots,
		Intermediates: intermediates,
		CurrentTime:   p.Now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return spiffeid.ID{}, validity{}, fmt.Errorf("the peer's certificate of %q does not chain to the trust bundle: %v", id, err)
	}
	v := validity{notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter}
	for _, c := range chains[0] {
		if c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
	}
	return id, v, nil
}

// checkLeaf is every rule of VerifyPeer but the chain.
func checkLeaf(certs []*x509.Certificate, p PeerPolicy) (spiffeid.ID, error) {
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
	return id, nil
}

// verifyCache remembers the chains verifyPeer accepted, so that a peer that
// reconnects (the common case in a mesh: a few workload identities, many
// connections) costs a SHA-256 and a map lookup instead of a chain verification. It
// belongs to one trust bundle and trust domain: the proxy makes a new one when
// either changes. A hit is still checked against the clock (the whole chain's
// validity) and against the expected identity; only successes are cached, and the
// TLS handshake still proves possession of the leaf's key every time.
type verifyCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedPeer
}

type cachedPeer struct {
	id   spiffeid.ID
	role PeerRole
	v    validity
}

const verifyCacheSize = 4096

func newVerifyCache() *verifyCache {
	return &verifyCache{m: map[[sha256.Size]byte]cachedPeer{}}
}

func (c *verifyCache) verify(certs []*x509.Certificate, p PeerPolicy) (spiffeid.ID, error) {
	h := sha256.New()
	var n [4]byte
	for _, cert := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(cert.Raw)))
		h.Write(n[:])
		h.Write(cert.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	c.mu.Lock()
	hit, ok := c.m[key]
	c.mu.Unlock()
	if ok && hit.role == p.Role && !p.Now.Before(hit.v.notBefore) && !p.Now.After(hit.v.notAfter) {
		if !p.Expected.IsZero() && hit.id != p.Expected {
			return spiffeid.ID{}, fmt.Errorf("unexpected peer SPIFFE ID, exp=%q got=%q", p.Expected, hit.id)
		}
		return hit.id, nil
	}
	id, v, err := verifyPeer(certs, p)
	if err != nil {
		return id, err
	}
	c.mu.Lock()
	if len(c.m) >= verifyCacheSize {
		for k := range c.m { // drop one at random
			delete(c.m, k)
			break
		}
	}
	c.m[key] = cachedPeer{id: id, role: p.Role, v: v}
	c.mu.Unlock()
	return id, nil
}
