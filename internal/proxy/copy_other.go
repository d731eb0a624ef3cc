//go:build !unix

package proxy

import (
	"io"
	"net"
)

func copyAdaptive(dst io.Writer, src net.Conn, counter Counter) error {
	return copyFromTLS(dst, src, counter)
}
