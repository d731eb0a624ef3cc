package capture

import (
	"errors"
	"net"
	"testing"
)

// A connection that no rule redirected must fail with ErrNotRedirected rather than
// return the listener's own address, or a proxy would forward it to itself.
// (The e2e capture test covers redirected connections, and the case where
// conntrack tracks the connection without translating it.)
func TestOriginalDstWithoutRedirect(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial(network, ln.Addr().String())
				if err == nil {
					defer c.Close()
					buf := make([]byte, 1)
					_, _ = c.Read(buf)
				}
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dst, err := OriginalDst(c.(*net.TCPConn))
			if err == nil {
				t.Fatalf("OriginalDst of an unredirected connection = %v, want an error", dst)
			}
			if !errors.Is(err, ErrNotRedirected) {
				t.Fatalf("OriginalDst error = %v, want ErrNotRedirected", err)
			}
		})
	}
}
