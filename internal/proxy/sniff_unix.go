//go:build unix

package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// sniffBuf holds what readAvailable reads at once: a whole ClientHello, usually
// (Go's is about 300 bytes, with a hybrid post-quantum key share about 1,500).
const sniffBuf = 4 << 10

var sniffPool = sync.Pool{New: func() any { b := make([]byte, sniffBuf); return &b }}

// readAvailable waits until c is readable, then reads what is there. On a socket
// it waits without a buffer (the poller tells readability) and reads into a pooled
// one, returning an exact-size copy: ten thousand silent connections hold no read
// buffers. Other connections are read a byte at a time.
func readAvailable(c net.Conn) ([]byte, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		b := make([]byte, 1)
		n, err := c.Read(b)
		return b[:n], err
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	// The pooled buffer is taken only for the read itself, never while waiting.
	var out []byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		bp := sniffPool.Get().(*[]byte)
		defer sniffPool.Put(bp)
		var n int
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if !errors.Is(rerr, syscall.EINTR) {
				break
			}
		}
		if errors.Is(rerr, syscall.EAGAIN) {
			return false
		}
		if n > 0 {
			out = append([]byte(nil), (*bp)[:n]...)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	if len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}
