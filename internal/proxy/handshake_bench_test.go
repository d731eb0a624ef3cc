package proxy

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

// BenchmarkHandshake is one full mTLS handshake, both sides in this process (the
// CPU of a client proxy and a server proxy together), per key-exchange setting:
// the figure behind the --key-exchange default (docs/proxy.md).
func BenchmarkHandshake(b *testing.B) {
	ca := testpki.MustCA("mesh")
	server, client := ca.MustIssue(serverID), ca.MustIssue(clientID)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	verify := func(role PeerRole) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			_, err := VerifyPeer(cs.PeerCertificates, PeerPolicy{TrustDomain: td, Roots: ca.Pool(), Now: time.Now(), Role: role})
			return err
		}
	}
	for _, bc := range []struct {
		name   string
		groups []tls.CurveID
	}{
		{"X25519", []tls.CurveID{tls.X25519}},
		{"P-256", []tls.CurveID{tls.CurveP256}},
		{"X25519MLKEM768", []tls.CurveID{tls.X25519MLKEM768}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			scfg := serverConfig(&server.TLS, bc.groups, verify(PeerClient))
			scfg.SessionTicketsDisabled = true
			ccfg := clientConfig(&client.TLS, bc.groups, verify(PeerServer))
			ccfg.ClientSessionCache = nil
			b.ReportAllocs()
			for b.Loop() {
				c, s := net.Pipe()
				errs := make(chan error, 1)
				go func() { errs <- tls.Server(s, scfg).Handshake() }()
				if err := tls.Client(c, ccfg).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				c.Close()
				s.Close()
			}
		})
	}
}
