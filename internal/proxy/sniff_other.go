//go:build !unix

package proxy

import "net"

// readAvailable reads what c has, a byte at a time where the poller is not at hand.
func readAvailable(c net.Conn) ([]byte, error) {
	b := make([]byte, 1)
	n, err := c.Read(b)
	return b[:n], err
}
