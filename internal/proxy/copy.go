package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
)

// Buffers for copies that involve TLS (plain TCP to plain TCP is spliced by the
// kernel through io.Copy and needs none). A read starts with a small buffer, so that
// an idle connection, blocked in Read, holds 2 KiB per direction rather than 32;
// a read that fills it is followed by reads into a large buffer until one comes back
// short. Buffers go back to their pool after every write.
const (
	smallBuf = 2 << 10
	largeBuf = 16 << 10 // one TLS record of plaintext
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
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

func copyAdaptive(dst io.Writer, src io.Reader, counter Counter) error {
	large := false
	for {
		pool := &smallPool
		if large {
			pool = &largePool
		}
		bp := pool.Get().(*[]byte)
		buf := *bp
		n, rerr := src.Read(buf)
		var werr error
		if n > 0 {
			_, werr = dst.Write(buf[:n])
			counter.Add(int(n))
		}
		large = n == len(buf)
		pool.Put(bp)
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
