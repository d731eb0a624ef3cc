package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// A port the application binds to localhost only is not reachable from the
// network without the proxy; the transparent inbound listener must not make it so.
// 127.0.0.2 stands in for the pod's address.
func TestTransparentInboundGoesToTheOriginalDestination(t *testing.T) {
	greeter := func(addr string) int {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("cannot listen on %s: %v", addr, err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go acceptLoop(ln, func(c net.Conn) {
			fmt.Fprintf(c, "app %s\n", ln.Addr())
			_ = c.Close()
		})
		return ln.Addr().(*net.TCPAddr).Port
	}
	private := greeter("127.0.0.1:0") // bound to localhost only
	public := greeter("127.0.0.2:0")  // bound to the pod's address
	podAddr := netip.MustParseAddr("127.0.0.2")
	dial := func(t *testing.T, toLocalhost bool, port int) string {
		t.Helper()
		o := Options{PodUID: "uid-1", SniffTimeout: 50 * time.Millisecond, InboundToLocalhost: toLocalhost,
			OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPortFrom(podAddr, uint16(port)), nil }}
		p := New(&MemorySource{}, o)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go p.Run(ctx)
		p.SetConfig(ppc("sha256:a", ModeDisable))
		ln := listen(t)
		go func() { _ = p.ServeInbound(ln, 0) }()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	t.Run("should not reach a localhost-only port", func(t *testing.T) {
		if got := dial(t, false, private); got != "" {
			t.Fatalf("a port bound to 127.0.0.1 answered through the pod address: %q", got)
		}
	})
	t.Run("should reach a port bound to the pod address, from the pod address", func(t *testing.T) {
		if got := dial(t, false, public); !strings.HasPrefix(got, "app 127.0.0.2:") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("should reach localhost with --inbound-upstream=localhost", func(t *testing.T) {
		if got := dial(t, true, private); !strings.HasPrefix(got, "app 127.0.0.1:") {
			t.Fatalf("got %q", got)
		}
	})
}

// The original destination is dialled from itself: a destination that is not
// one of the pod's addresses (a connection routed through the pod to another
// host) is refused rather than relayed.
func TestTransparentInboundRefusesAForeignDestination(t *testing.T) {
	p := New(&MemorySource{}, Options{DialTimeout: time.Second})
	if c, err := p.dialApp(80, netip.MustParseAddrPort("192.0.2.1:80")); err == nil {
		_ = c.Close()
		t.Fatal("dialled 192.0.2.1, which is not a local address")
	}
}
