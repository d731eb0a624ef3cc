package proxy

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

const (
	clientID = "spiffe://cluster.local/ns/shop/sa/frontend"
	serverID = "spiffe://cluster.local/ns/shop/sa/finance"
)

func TestVerifyPeer(t *testing.T) {
	ca := testpki.MustCA("mesh")
	other := testpki.MustCA("other")
	now := time.Now()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")

	cases := []struct {
		name    string
		chain   func() []*x509.Certificate
		policy  func(*PeerPolicy)
		wantID  string
		wantErr string
	}{
		{name: "should accept a workload certificate as cert-manager issues it",
			chain: leaf(ca, clientID), wantID: clientID},
		{name: "should accept a certificate with DNS names besides its one URI",
			chain: leaf(ca, clientID, testpki.WithDNSNames("frontend.shop.svc")), wantID: clientID},
		{name: "should accept the expected server identity outbound",
			chain: leaf(ca, serverID), wantID: serverID,
			policy: func(p *PeerPolicy) { p.Role = PeerServer; p.Expected = spiffeid.RequireFromString(serverID) }},
		{name: "should refuse a peer without a certificate",
			chain: func() []*x509.Certificate { return nil }, wantErr: "presented no certificate"},
		{name: "should refuse everything without a trust bundle",
			chain: leaf(ca, clientID), policy: func(p *PeerPolicy) { p.Roots = nil }, wantErr: "no trust bundle"},
		{name: "should refuse everything without a trust domain",
			chain: leaf(ca, clientID), policy: func(p *PeerPolicy) { p.TrustDomain = spiffeid.TrustDomain{} }, wantErr: "trust domain is not known"},
		{name: "should refuse a certificate from another CA",
			chain: leaf(other, clientID), wantErr: "does not chain to the trust bundle"},
		{name: "should refuse a SPIFFE ID from another trust domain",
			chain: leaf(ca, "spiffe://example.org/ns/shop/sa/frontend"), wantErr: `not in the trust domain "cluster.local"`},
		{name: "should refuse an expired certificate",
			chain: leaf(ca, clientID, testpki.ValidBetween(now.Add(-2*time.Hour), now.Add(-time.Hour))), wantErr: "expired"},
		{name: "should refuse a certificate not yet valid",
			chain: leaf(ca, clientID, testpki.ValidBetween(now.Add(time.Hour), now.Add(2*time.Hour))), wantErr: "does not chain"},
		{name: "should refuse two URI SANs",
			chain: leaf(ca, "", testpki.WithURIs(clientID, serverID)), wantErr: "exactly one URI SAN, it has 2"},
		{name: "should refuse a certificate without URI SAN",
			chain: leaf(ca, "", testpki.WithDNSNames("frontend")), wantErr: "exactly one URI SAN, it has 0"},
		{name: "should refuse a URI that is not a SPIFFE ID",
			chain: leaf(ca, "https://cluster.local/ns/shop/sa/frontend"), wantErr: "is not a SPIFFE ID"},
		{name: "should refuse a SPIFFE ID with a query",
			chain: leaf(ca, clientID+"?admin=true"), wantErr: "is not a SPIFFE ID"},
		{name: "should refuse a SPIFFE ID that names only the trust domain",
			chain: leaf(ca, "spiffe://cluster.local"), wantErr: "has no path"},
		{name: "should refuse a CA certificate as leaf",
			chain: leaf(ca, clientID, testpki.AsCA()), wantErr: "is a CA"},
		{name: "should refuse a leaf with keyCertSign even without CA:TRUE",
			chain: leaf(ca, clientID, testpki.WithKeyUsage(x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign)), wantErr: "keyCertSign"},
		{name: "should refuse a leaf without digitalSignature",
			chain: leaf(ca, clientID, testpki.WithKeyUsage(x509.KeyUsageKeyEncipherment)), wantErr: "lacks the digitalSignature"},
		{name: "should refuse a leaf with clientAuth only",
			chain: leaf(ca, clientID, testpki.WithExtKeyUsage(x509.ExtKeyUsageClientAuth)), wantErr: "serverAuth=false clientAuth=true"},
		{name: "should refuse a leaf with serverAuth only",
			chain: leaf(ca, clientID, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth)), wantErr: "serverAuth=true clientAuth=false"},
		{name: "should refuse a leaf with only the any extended key usage",
			chain: leaf(ca, clientID, testpki.WithExtKeyUsage(x509.ExtKeyUsageAny)), wantErr: "serverAuth=false clientAuth=false"},
		{name: "should refuse a server whose identity is not the one expected",
			chain: leaf(ca, clientID), wantErr: `unexpected peer SPIFFE ID, exp="spiffe://cluster.local/ns/shop/sa/finance" got="spiffe://cluster.local/ns/shop/sa/frontend"`,
			policy: func(p *PeerPolicy) { p.Role = PeerServer; p.Expected = spiffeid.RequireFromString(serverID) }},
		{name: "should refuse a chain whose intermediate is not from the trust bundle",
			chain: func() []*x509.Certificate {
				l := other.MustIssue(clientID)
				return []*x509.Certificate{l.Cert, other.Cert}
			}, wantErr: "does not chain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PeerPolicy{TrustDomain: td, Roots: ca.Pool(), Now: now, Role: PeerClient}
			if tc.policy != nil {
				tc.policy(&p)
			}
			chain := tc.chain()
			id, err := VerifyPeer(chain, p)
			// The cache answers what VerifyPeer answers, on a miss and on a hit.
			cache := newVerifyCache()
			for i := 0; i < 2; i++ {
				cid, cerr := cache.verify(chain, p)
				if cid != id || (cerr == nil) != (err == nil) || cerr != nil && cerr.Error() != err.Error() {
					t.Fatalf("cache pass %d: %v %v, VerifyPeer: %v %v", i, cid, cerr, id, err)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error containing %q, got id=%v err=%v", tc.wantErr, id, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want %s accepted, got %v", tc.wantID, err)
			}
			if id.String() != tc.wantID {
				t.Fatalf("want id %s, got %s", tc.wantID, id)
			}
		})
	}
}

func leaf(ca *testpki.CA, id string, opts ...testpki.Option) func() []*x509.Certificate {
	return func() []*x509.Certificate { return []*x509.Certificate{ca.MustIssue(id, opts...).Cert} }
}

func BenchmarkVerifyPeer(b *testing.B) {
	ca := testpki.MustCA("mesh")
	chain := []*x509.Certificate{ca.MustIssue(clientID).Cert}
	p := PeerPolicy{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Roots: ca.Pool(), Now: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyPeer(chain, p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVerifyCache(t *testing.T) {
	ca := testpki.MustCA("mesh")
	now := time.Now()
	leaf := ca.MustIssue(clientID, testpki.ValidBetween(now.Add(-time.Hour), now.Add(time.Hour)))
	chain := []*x509.Certificate{leaf.Cert}
	p := PeerPolicy{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Roots: ca.Pool(), Now: now}
	c := newVerifyCache()
	if _, err := c.verify(chain, p); err != nil {
		t.Fatal(err)
	}
	t.Run("should re-check the clock on a hit", func(t *testing.T) {
		later := p
		later.Now = now.Add(2 * time.Hour)
		if _, err := c.verify(chain, later); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("an expired chain passed from the cache: %v", err)
		}
	})
	t.Run("should check the expected identity on a hit", func(t *testing.T) {
		out := p
		out.Role, out.Expected = PeerServer, spiffeid.RequireFromString(serverID)
		if _, err := c.verify(chain, out); err == nil || !strings.Contains(err.Error(), "unexpected peer SPIFFE ID") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("should stay bounded", func(t *testing.T) {
		for i := 0; len(c.m) < verifyCacheSize; i++ {
			c.m[[32]byte{byte(i), byte(i >> 8), 1}] = cachedPeer{}
		}
		if _, err := c.verify([]*x509.Certificate{ca.MustIssue(clientID).Cert}, p); err != nil {
			t.Fatal(err)
		}
		if len(c.m) != verifyCacheSize {
			t.Fatalf("%d entries, want at most %d", len(c.m), verifyCacheSize)
		}
	})
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	ca := testpki.MustCA("mesh")
	chain := []*x509.Certificate{ca.MustIssue(clientID).Cert}
	p := PeerPolicy{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Roots: ca.Pool(), Now: time.Now()}
	c := newVerifyCache()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.verify(chain, p); err != nil {
			b.Fatal(err)
		}
	}
}
