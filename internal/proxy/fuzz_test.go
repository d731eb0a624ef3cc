package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

// FuzzClassify hunts panics and inconsistencies in first-bytes sniffing: the decision
// must be stable as more bytes arrive, never need more than sniffLen bytes, and a
// real ClientHello (the seed) must always be TLS.
func FuzzClassify(f *testing.F) {
	f.Add(clientHello(f))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
	f.Add([]byte{0x16, 0x03, 0x01, 0x00})
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		decided := NeedMore
		for i := 0; i <= len(b); i++ {
			p := Classify(b[:i])
			if decided != NeedMore && p != decided {
				t.Fatalf("Classify changed its mind at %d bytes: %v then %v", i, decided, p)
			}
			if i >= sniffLen && p == NeedMore {
				t.Fatalf("Classify needs more than %d bytes", sniffLen)
			}
			decided = p
		}
	})
}

// FuzzHandshakeInput feeds arbitrary first bytes to a STRICT-style TLS server: it
// must fail cleanly (no panic, no hang past the deadline) and never accept.
func FuzzHandshakeInput(f *testing.F) {
	hello := clientHello(f)
	f.Add(hello)
	f.Add(hello[:len(hello)/2])
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	cfg := strictTestConfig()
	f.Fuzz(func(t *testing.T, b []byte) { runHSWith(t, cfg, b) })
}

// strictTestConfig is a server configuration that accepts only a client
// certificate from a CA nobody has.
func strictTestConfig() *tls.Config {
	ca := testpki.MustCA("mesh")
	server := ca.MustIssue(serverID)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{server.TLS},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPeer(cs.PeerCertificates, PeerPolicy{TrustDomain: td, Roots: ca.Pool(), Now: time.Now()})
			return err
		},
	}
	return cfg
}

func runHSWith(t *testing.T, cfg *tls.Config, b []byte) {
	{
		c, s := net.Pipe()
		defer c.Close()
		go func() { _, _ = io.Copy(io.Discard, c) }()
		go func() {
			_, _ = c.Write(b)
			_ = c.Close()
		}()
		_ = s.SetDeadline(time.Now().Add(2 * time.Second))
		p, prefix, _ := sniff(s, time.Now().Add(time.Second), time.Now().Add(time.Second))
		if p != TLS {
			return
		}
		conn := tls.Server(&prefixConn{Conn: s, prefix: prefix}, cfg)
		if err := conn.Handshake(); err == nil {
			t.Fatal("a handshake without a valid client certificate succeeded")
		}
	}
}
