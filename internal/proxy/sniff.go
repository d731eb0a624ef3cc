package proxy

import (
	"errors"
	"net"
	"os"
	"time"
)

// Protocol is what the first bytes of a connection say it speaks.
type Protocol int

const (
	// NeedMore: the bytes seen so far could still be either.
	NeedMore Protocol = iota
	// TLS: the bytes start a TLS ClientHello record.
	TLS
	// Plaintext: anything else.
	Plaintext
)

func (p Protocol) String() string {
	switch p {
	case TLS:
		return "tls"
	case Plaintext:
		return "plaintext"
	default:
		return "need-more"
	}
}

// sniffLen is how many bytes Classify needs at most: the 5-byte record header and
// the handshake message type.
const sniffLen = 6

// maxRecordLen bounds a TLS record's length field: 2^14 bytes of plaintext plus the
// expansion RFC 8446 allows for a protected record. A ClientHello record is never
// protected, but being lenient here costs nothing: the handshake decides.
const maxRecordLen = 1<<14 + 256

// Classify says whether b, the first bytes a client sent, start a TLS ClientHello.
// It decides as early as the bytes allow, so that a plaintext client is recognised
// from its first byte and a TLS client from its first six: sniffing never waits on a
// timer for a client that speaks first. It is pure and never reads past sniffLen.
//
// A ClientHello record is: content type 22 (handshake), legacy version 3.x with x
// at most 4, a non-zero length, then handshake type 1 (client_hello). SSL 2.0
// hellos are not TLS to us (nothing here speaks it).
func Classify(b []byte) Protocol {
	if len(b) == 0 {
		return NeedMore
	}
	if b[0] != 0x16 {
		return Plaintext
	}
	if len(b) < 2 {
		return NeedMore
	}
	if b[1] != 0x03 {
		return Plaintext
	}
	if len(b) < 3 {
		return NeedMore
	}
	if b[2] > 0x04 {
		return Plaintext
	}
	if len(b) < 5 {
		return NeedMore
	}
	if n := int(b[3])<<8 | int(b[4]); n == 0 || n > maxRecordLen {
		return Plaintext
	}
	if len(b) < 6 {
		return NeedMore
	}
	if b[5] != 0x01 {
		return Plaintext
	}
	return TLS
}

// errSilent is returned by sniff when the client sent nothing before the deadline.
var errSilent = errors.New("the client sent nothing before the sniffing deadline")

// sniff reads the first bytes of c and classifies them. The first byte must come
// within firstByte (a client that stays silent longer is treated as a server-first
// plaintext client: errSilent, Plaintext); the rest of a ClientHello header must come
// before rest. Everything it read is returned as prefix, to be replayed: on a TCP
// connection it reads whatever the client sent so far (usually the whole
// ClientHello, which the TLS handshake then takes from memory instead of another
// read), without holding a buffer while it waits. A client that closes before
// sending anything gives io.EOF.
func sniff(c net.Conn, firstByte, rest time.Time) (Protocol, []byte, error) {
	var prefix []byte
	if err := c.SetReadDeadline(firstByte); err != nil {
		return Plaintext, nil, err
	}
	for {
		b, err := readAvailable(c)
		prefix = append(prefix, b...)
		if p := Classify(prefix); p != NeedMore {
			return p, prefix, c.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if len(prefix) == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				_ = c.SetReadDeadline(time.Time{})
				return Plaintext, nil, errSilent
			}
			// A partial ClientHello header that stops coming: TLS it was, and the
			// handshake (which will fail) counts it.
			if len(prefix) > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				return TLS, prefix, c.SetReadDeadline(time.Time{})
			}
			return NeedMore, prefix, err
		}
		if err := c.SetReadDeadline(rest); err != nil {
			return NeedMore, prefix, err
		}
	}
}

// prefixConn replays bytes that sniffing consumed before reading from the
// connection again.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// CloseWrite half-closes the underlying TCP connection.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
