package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

func TestInboundStrict(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModeStrict))

	t.Run("should accept a client with a certificate from the trust bundle", func(t *testing.T) {
		c, err := h.mtls(&h.client.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("want TLS 1.3, got %x", v)
		}
	})
	t.Run("should refuse plaintext", func(t *testing.T) {
		c, err := h.plain()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !refused(c) {
			t.Fatal("plaintext reached the application on a STRICT port")
		}
	})
	t.Run("should refuse a client without a certificate", func(t *testing.T) {
		_, err := h.mtls(nil)
		mustContain(t, err, "certificate required")
	})
	t.Run("should refuse TLS 1.2", func(t *testing.T) {
		_, err := h.mtls(&h.client.TLS, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
		mustContain(t, err, "protocol version")
	})
	t.Run("should refuse a client of another CA", func(t *testing.T) {
		other := testpki.MustCA("other").MustIssue(clientID)
		_, err := h.mtls(&other.TLS)
		mustContain(t, err, "bad certificate")
	})
	h.wantCounters(1, 0, 1, 3)
}

func TestInboundPermissive(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModePermissive))

	t.Run("should accept mTLS", func(t *testing.T) {
		c, err := h.mtls(&h.client.TLS)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("should pass plaintext that speaks first, without waiting for the sniffing deadline", func(t *testing.T) {
		c, err := h.plain()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if err := roundTrip(c, "GET / HTTP/1.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// The deadline is 100ms in the harness; a client that speaks first never waits for it.
		if d := time.Since(start); d > 90*time.Millisecond {
			t.Fatalf("a plaintext round trip took %v", d)
		}
	})
	t.Run("should still refuse a TLS client with a bad certificate (no fallback to plaintext)", func(t *testing.T) {
		_, err := h.mtls(nil)
		mustContain(t, err, "certificate required")
	})
	h.wantCounters(1, 1, 0, 1)
}

func TestInboundPermissiveServerFirst(t *testing.T) {
	banner := func(c net.Conn) {
		defer c.Close()
		_, _ = io.WriteString(c, "220 smtp ready\r\n")
		_, _ = io.Copy(c, c)
	}
	h := newHarness(t, banner)
	h.p.SetConfig(ppc("sha256:1", ModePermissive))
	c, err := h.plain()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 16)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "220 smtp ready\r\n" {
		t.Fatalf("a server-first protocol did not get its banner through a PERMISSIVE port: %q %v", buf, err)
	}
	h.wantCounters(0, 1, 0, 0)

	t.Run("should count a server-first client refused on a STRICT port as rejected plaintext", func(t *testing.T) {
		h.p.SetConfig(ppc("sha256:2", ModeStrict))
		c, err := h.plain()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err == nil {
			t.Fatalf("a STRICT port passed a banner: %q", buf[:n])
		}
		h.wantCounters(0, 1, 1, 0)
	})
}

func TestInboundDisable(t *testing.T) {
	got := make(chan []byte, 1)
	record := func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 6)
		_, _ = io.ReadFull(c, b)
		got <- b
	}
	h := newHarness(t, record)
	h.p.SetConfig(ppc("sha256:1", ModeDisable))
	// A TLS client on a DISABLE port reaches the application as it is: the proxy does
	// not terminate TLS.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_ = tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	select {
	case b := <-got:
		if Classify(b) != TLS {
			t.Fatalf("the application did not get the ClientHello: % x", b)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("nothing reached the application")
	}
	h.wantCounters(0, 1, 0, 0)
}

func TestPortExceptions(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModeStrict, PortMTLS{Port: int32(h.appPort), Mode: ModeDisable}))
	c, err := h.plain()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, "plain"); err != nil {
		t.Fatalf("a DISABLE exception on a STRICT pod refused plaintext: %v", err)
	}
}

func TestFailClosed(t *testing.T) {
	t.Run("should treat every port as STRICT before a PodProxyConfig arrives", func(t *testing.T) {
		h := newHarness(t, nil)
		c, err := h.plain()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !refused(c) {
			t.Fatal("plaintext passed without a configuration")
		}
		if ready, _ := h.p.Ready(); ready {
			t.Fatal("ready without a configuration")
		}
		// mTLS works already: the trust domain comes from the pod's own certificate.
		m, err := h.mtls(&h.client.TLS)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	})
	t.Run("should refuse everything on a STRICT port without a certificate", func(t *testing.T) {
		h := newHarness(t, nil)
		h.src.Set(nil, h.ca.CertPEM)
		h.p.SetConfig(ppc("sha256:1", ModeStrict))
		waitFor(t, func() bool { return h.p.state.Load().server == nil })
		if _, err := h.mtls(&h.client.TLS); err == nil {
			t.Fatal("a handshake succeeded without a certificate")
		}
		c, _ := h.plain()
		if !refused(c) {
			t.Fatal("plaintext passed")
		}
		if ready, why := h.p.Ready(); ready {
			t.Fatal("ready without a certificate on a STRICT port")
		} else if why == "" {
			t.Fatal("no reason given")
		}
		h.wantCounters(0, 0, 1, 1)
	})
	t.Run("should refuse everything on a STRICT port without a trust bundle", func(t *testing.T) {
		h := newHarness(t, nil)
		h.src.Set(&h.server.TLS, nil)
		h.p.SetConfig(ppc("sha256:1", ModeStrict))
		waitFor(t, func() bool { return h.p.state.Load().server == nil })
		if _, err := h.mtls(&h.client.TLS); err == nil {
			t.Fatal("a handshake succeeded without a trust bundle")
		}
	})
	t.Run("should not apply a configuration for another pod of the same name", func(t *testing.T) {
		h := newHarness(t, nil)
		obj := ppc("sha256:1", ModeDisable)
		obj.Spec.PodUID = "uid-of-the-previous-pod"
		h.p.SetConfig(obj)
		c, _ := h.plain()
		if !refused(c) {
			t.Fatal("plaintext passed under another pod's DISABLE")
		}
		if a := h.p.Applied(); a.Config != nil || a.Rejected == "" {
			t.Fatalf("want the configuration rejected, got %+v", a)
		}
	})
	t.Run("should keep enforcing STRICT when the PodProxyConfig disappears", func(t *testing.T) {
		h := newHarness(t, nil)
		h.p.SetConfig(ppc("sha256:1", ModeStrict))
		h.p.SetConfig(nil)
		c, _ := h.plain()
		if !refused(c) {
			t.Fatal("plaintext passed")
		}
	})
}

func TestReloadKeepsConnections(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModePermissive))
	m, err := h.mtls(&h.client.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pl, err := h.plain()
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	if err := roundTrip(pl, "x"); err != nil {
		t.Fatal(err)
	}

	// A new certificate and bundle (root rotation: both CAs trusted), then STRICT.
	ca2 := testpki.MustCA("mesh-2")
	srv2 := ca2.MustIssue(serverID)
	h.src.Set(&srv2.TLS, append(append([]byte{}, h.ca.CertPEM...), ca2.CertPEM...))
	h.p.SetConfig(ppc("sha256:2", ModeStrict))

	for _, c := range []net.Conn{m, pl} {
		if err := roundTrip(c, "still there"); err != nil {
			t.Fatalf("an open connection did not survive the reload: %v", err)
		}
	}
	// New connections see the new state: the new certificate, and STRICT.
	m2, err := h.mtls(&h.client.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := m2.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(srv2.Cert.SerialNumber) != 0 {
		t.Fatal("a new connection did not get the new certificate")
	}
	c, _ := h.plain()
	if !refused(c) {
		t.Fatal("plaintext passed after the change to STRICT")
	}
}

// TestResumptionRechecked proves that a resumed TLS session is checked against the
// trust bundle current at resumption: crypto/tls skips VerifyPeerCertificate on
// resumption, and a client whose CA was removed must not get back in with a ticket.
func TestResumptionRechecked(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModeStrict))
	cache := tls.NewLRUClientSessionCache(8)
	withCache := func(c *tls.Config) { c.ClientSessionCache = cache }

	first, err := h.mtls(&h.client.TLS, withCache)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	second, err := h.mtls(&h.client.TLS, withCache)
	if err != nil {
		t.Fatal(err)
	}
	if !second.ConnectionState().DidResume {
		t.Fatal("the test is void: the second connection did not resume")
	}
	second.Close()

	t.Run("should refuse a resumed session once the client's CA left the bundle", func(t *testing.T) {
		ca2 := testpki.MustCA("mesh-2")
		h.src.Set(&h.server.TLS, ca2.CertPEM)
		waitFor(t, func() bool { return h.p.state.Load().material.Version == h.src.Current().Version })
		if _, err := h.mtls(&h.client.TLS, withCache); err == nil {
			t.Fatal("a client of a CA no longer trusted got in")
		}
	})

	t.Run("should re-check resumed sessions even with unchanged ticket keys", func(t *testing.T) {
		// The second line of defence on its own: a resumption that decrypts its
		// ticket (same tls.Config, same keys) still runs VerifyConnection.
		h2 := newHarness(t, nil)
		h2.p.SetConfig(ppc("sha256:1", ModeStrict))
		cache := tls.NewLRUClientSessionCache(8)
		withCache := func(c *tls.Config) { c.ClientSessionCache = cache }
		c, err := h2.mtls(&h2.client.TLS, withCache)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		c, err = h2.mtls(&h2.client.TLS, withCache)
		if err != nil || !c.ConnectionState().DidResume {
			t.Fatalf("the test is void: no resumption before the change (%v)", err)
		}
		c.Close()
		st := h2.p.state.Load()
		ca2 := testpki.MustCA("mesh-2")
		// Publish new roots without a new tls.Config: the old server config (and its
		// ticket keys) stays in place.
		mat := *st.material
		mat.Roots = ca2.Pool()
		h2.p.state.Store(&state{config: st.config, material: &mat, trustDomain: st.trustDomain, server: st.server, cert: st.cert})
		c2, err := h2.mtls(&h2.client.TLS, withCache)
		if err == nil {
			resumed := c2.ConnectionState().DidResume
			c2.Close()
			t.Fatalf("a resumed session (resumed=%v) skipped the trust-bundle check", resumed)
		}
	})
}

func TestHalfClose(t *testing.T) {
	// The application reads until the client half-closes, then answers and closes:
	// the answer must come back after the client's FIN went through the proxy.
	app := func(c net.Conn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = c.Write(bytes.ToUpper(b))
	}
	h := newHarness(t, app)
	h.p.SetConfig(ppc("sha256:1", ModePermissive))
	for name, dial := range map[string]func() (net.Conn, error){
		"plaintext": h.plain,
		"mtls": func() (net.Conn, error) {
			return tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{h.client.TLS}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, "half"); err != nil {
				t.Fatal(err)
			}
			if err := closeWrite(c); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "HALF" {
				t.Fatalf("want HALF after a half-close, got %q %v", b, err)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 3s")
		}
	}
}

func TestBulkIntegrity(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModePermissive))
	data := make([]byte, 4<<20+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for name, dial := range map[string]func() (net.Conn, error){
		"plaintext": h.plain,
		"mtls": func() (net.Conn, error) {
			return tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{h.client.TLS}})
		},
	} {
		t.Run("should carry 4 MiB both ways intact over "+name, func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			go func() {
				// Odd-sized writes, so that reads see every boundary.
				for off := 0; off < len(data); {
					n := min(len(data)-off, 1+off%70000)
					if _, err := c.Write(data[off : off+n]); err != nil {
						return
					}
					off += n
				}
				_ = closeWrite(c)
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes back, want %d, equal=%v", len(got), len(data), bytes.Equal(got, data))
			}
		})
	}
}
