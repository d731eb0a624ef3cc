package capture

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// A connection that no rule redirected has no NAT entry: OriginalDst must fail
// (ENOENT) rather than return the listener's own address, or a proxy would
// forward such a connection to itself.
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
			// ENOENT: conntrack has no entry; ENOPROTOOPT: conntrack is not
			// loaded in this kernel at all. Either way, not a destination.
			if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOPROTOOPT) {
				t.Fatalf("OriginalDst error = %v, want ENOENT or ENOPROTOOPT", err)
			}
		})
	}
}
