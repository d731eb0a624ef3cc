package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

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

// FuzzHandshakeInput feeds arbitrary first bytes to the proxy's own inbound handler
// on a STRICT port: it must return (no hang past the handshake timeout), never
// panic, and never accept a connection without a valid client certificate.
func FuzzHandshakeInput(f *testing.F) {
	hello := clientHello(f)
	f.Add(hello)
	f.Add(hello[:len(hello)/2])
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	ca := testpki.MustCA("mesh")
	src := &MemorySource{}
	src.Set(&ca.MustIssue(serverID).TLS, ca.CertPEM)
	p := New(src, Options{HandshakeTimeout: 500 * time.Millisecond, SniffTimeout: 50 * time.Millisecond})
	p.SetConfig(ppc("sha256:fuzz", ModeStrict))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, s := net.Pipe()
		defer c.Close()
		go func() { _, _ = io.Copy(io.Discard, c) }()
		go func() {
			_, _ = c.Write(b)
			_ = c.Close()
		}()
		done := make(chan struct{})
		go func() {
			p.inbound(s, 1, netip.AddrPort{})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the inbound handler did not return")
		}
		if n := p.Counters().MTLS.Load(); n != 0 {
			t.Fatalf("%d connections accepted as mTLS", n)
		}
	})
}
