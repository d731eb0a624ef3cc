package proxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// outboundProxy starts a client-side proxy whose explicit outbound listener goes to
// dst, with the client certificate of h's CA.
func outboundProxy(t *testing.T, h *harness, dst string, dests StaticDestinations) (addr string, p *Proxy) {
	src := &MemorySource{}
	src.Set(&h.client.TLS, h.ca.CertPEM)
	p = New(src, Options{Destinations: dests})
	p.SetConfig(ppc("sha256:c", ModeStrict))
	ln := listen(t)
	go func() { _ = p.ServeOutbound(ln, netip.MustParseAddrPort(dst)) }()
	return ln.Addr().String(), p
}

func TestOutbound(t *testing.T) {
	h := newHarness(t, nil)
	h.p.SetConfig(ppc("sha256:1", ModeStrict))
	server := netip.MustParseAddrPort(h.addr)

	t.Run("should originate mTLS to a configured destination and check its SPIFFE ID", func(t *testing.T) {
		addr, _ := outboundProxy(t, h, h.addr, StaticDestinations{server: spiffeid.RequireFromString(serverID)})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, "through both proxies"); err != nil {
			t.Fatal(err)
		}
		h.wantCounters(1, 0, 0, 0)
	})
	t.Run("should refuse a destination that proves another identity", func(t *testing.T) {
		addr, p := outboundProxy(t, h, h.addr, StaticDestinations{server: spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/other")})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !refused(c) {
			t.Fatal("the connection went through to the wrong identity")
		}
		if got := counterValue(t, p.Metrics(), "meshtls_proxy_connections_total", map[string]string{"direction": "outbound", "result": ResultHandshakeFailure}); got != 1 {
			t.Fatalf("want one outbound handshake failure counted, got %v", got)
		}
	})
	t.Run("should pass an unknown destination through unchanged", func(t *testing.T) {
		addr, _ := outboundProxy(t, h, "127.0.0.1:"+itoa(h.appPort), StaticDestinations{server: spiffeid.RequireFromString(serverID)})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, "plain to the app"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParseDestination(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"10.0.0.1:8080=spiffe://cluster.local/ns/a/sa/b", ""},
		{"[::ffff:10.0.0.1]:8080=spiffe://cluster.local/ns/a/sa/b", ""},
		{"10.0.0.1:8080", "want IP:PORT=spiffe"},
		{"db:8080=spiffe://cluster.local/ns/a/sa/b", "is not IP:PORT"},
		{"10.0.0.1:8080=https://x/y", "is not a SPIFFE ID"},
		{"10.0.0.1:8080=spiffe://cluster.local", "names no workload"},
	} {
		ap, _, err := ParseDestination(tc.in)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			} else if !ap.Addr().Is4() {
				t.Errorf("%s: want the address unmapped, got %v", tc.in, ap)
			}
			continue
		}
		if err == nil || !contains(err.Error(), tc.err) {
			t.Errorf("%s: want an error containing %q, got %v", tc.in, tc.err, err)
		}
	}
}

func TestParseKeyExchange(t *testing.T) {
	got, err := ParseKeyExchange("X25519MLKEM768, x25519,P-256,p256")
	if err != nil || len(got) != 3 {
		t.Fatalf("got %v %v", got, err)
	}
	if _, err := ParseKeyExchange("X448"); err == nil || !contains(err.Error(), `unknown key-exchange group "X448"`) {
		t.Fatalf("got %v", err)
	}
}
