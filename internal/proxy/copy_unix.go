//go:build unix

package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
)

func copyAdaptive(dst io.Writer, src net.Conn, counter Counter) error {
	if sc, ok := src.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return copyFromSocket(dst, rc, counter)
		}
	}
	return copyFromTLS(dst, src, counter)
}

// copyFromSocket copies from a socket, holding a buffer only while there is data.
func copyFromSocket(dst io.Writer, rc syscall.RawConn, counter Counter) error {
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			bp = largeTCPPool.Get().(*[]byte)
			for {
				n, rerr = syscall.Read(int(fd), *bp)
				if !errors.Is(rerr, syscall.EINTR) {
					break
				}
			}
			if errors.Is(rerr, syscall.EAGAIN) {
				largeTCPPool.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if bp == nil {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if err != nil || rerr != nil || n <= 0 {
			largeTCPPool.Put(bp)
			switch {
			case err != nil:
				return err
			case rerr != nil:
				return rerr
			}
			return nil // end of stream
		}
		_, werr := dst.Write((*bp)[:n])
		counter.Add(n)
		largeTCPPool.Put(bp)
		if werr != nil {
			return werr
		}
	}
}
