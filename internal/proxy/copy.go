package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
)

// Buffers for copies that involve TLS (plain TCP to plain TCP is spliced by the
// kernel through io.Copy and needs none). Memory held by idle connections is what
// matters, so no copy holds a large buffer while it waits:
//
//   - from a TCP socket, the copy waits on the poller with no buffer at all, then
//     reads what is there into a pooled 32 KiB buffer (two TLS records' worth for
//     the write that follows) and gives it back after the write;
//   - from TLS, whose reads block inside crypto/tls, the copy waits in a 2 KiB read;
//     when that fills, the rest of the record is already decrypted in crypto/tls,
//     and a second read into a 16 KiB buffer takes it at once, so a full record
//     still goes out in one write.
const (
	smallBuf    = 2 << 10
	largeTLSBuf = 16 << 10 // a TLS record's plaintext at most
	largeTCPBuf = 32 << 10
)

var (
	smallPool    = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largeTLSPool = sync.Pool{New: func() any { b := make([]byte, largeTLSBuf); return &b }}
	largeTCPPool = sync.Pool{New: func() any { b := make([]byte, largeTCPBuf); return &b }}
)

// relay copies both ways between the downstream connection and the upstream one
// until both directions are done, half-closing each side when the other stops
// sending, and closes both. received counts bytes from downstream, sent bytes to it.
func relay(down, up net.Conn, received, sent Counter) {
	done := make(chan struct{})
	go func() {
		pipe(up, down, received)
		close(done)
	}()
	pipe(down, up, sent)
	<-done
	_ = down.Close()
	_ = up.Close()
}

// pipe copies src to dst. On a clean end of src it half-closes dst, so the peer
// sees the end of the stream while the other direction goes on; on an error it
// closes both, which ends the other direction too.
func pipe(dst, src net.Conn, counter Counter) {
	var err error
	if plainTCP(dst) && plainTCP(src) {
		var n int64
		n, err = io.Copy(dst, src)
		counter.Add(int(n))
	} else {
		err = copyAdaptive(dst, src, counter)
	}
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if closeWrite(dst) != nil {
		_ = dst.Close()
	}
}

func plainTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// copyFromTLS copies from a TLS connection (or any reader), waiting in a small
// read and taking the rest of a record in a second one.
func copyFromTLS(dst io.Writer, src io.Reader, counter Counter) error {
	for {
		sp := smallPool.Get().(*[]byte)
		n, rerr := src.Read(*sp)
		buf, lp := (*sp)[:n], (*[]byte)(nil)
		if n == len(*sp) && rerr == nil {
			lp = largeTLSPool.Get().(*[]byte)
			copy(*lp, buf)
			var m int
			m, rerr = src.Read((*lp)[n:])
			buf = (*lp)[:n+m]
		}
		var werr error
		if len(buf) > 0 {
			_, werr = dst.Write(buf)
			counter.Add(len(buf))
		}
		smallPool.Put(sp)
		if lp != nil {
			largeTLSPool.Put(lp)
		}
		if werr != nil {
			return werr
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// closeWrite half-closes c: a TLS connection sends close_notify and then shuts the
// TCP connection's sending side, so peers that wait for FIN see the end too.
func closeWrite(c net.Conn) error {
	switch c := c.(type) {
	case *tls.Conn:
		if err := c.CloseWrite(); err != nil {
			return err
		}
		return closeWrite(c.NetConn())
	case interface{ CloseWrite() error }:
		return c.CloseWrite()
	}
	return nil
}
