package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	hello := clientHello(t)
	cases := []struct {
		name string
		in   []byte
		want Protocol
	}{
		{"should wait for the first byte", nil, NeedMore},
		{"should know an HTTP request from its first byte", []byte("G"), Plaintext},
		{"should know a TLS ClientHello from its first six bytes", hello[:6], TLS},
		{"should know a whole TLS ClientHello", hello, TLS},
		{"should wait after the handshake content type", hello[:1], NeedMore},
		{"should wait after a partial record header", hello[:5], NeedMore},
		{"should call a handshake record of another version plaintext", []byte{0x16, 0x02}, Plaintext},
		{"should call a TLS 3.5 record plaintext", []byte{0x16, 0x03, 0x05}, Plaintext},
		{"should call an empty record plaintext", []byte{0x16, 0x03, 0x01, 0x00, 0x00}, Plaintext},
		{"should call an oversized record plaintext", []byte{0x16, 0x03, 0x01, 0xff, 0xff}, Plaintext},
		{"should call a ServerHello plaintext", []byte{0x16, 0x03, 0x03, 0x00, 0x40, 0x02}, Plaintext},
		{"should call a TLS alert plaintext", []byte{0x15, 0x03, 0x03, 0x00, 0x02}, Plaintext},
		{"should call an SSLv2 hello plaintext", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, Plaintext},
		{"should call a MySQL-style binary greeting plaintext", []byte{0x4a, 0x00, 0x00, 0x00, 0x0a}, Plaintext},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.in); got != tc.want {
				t.Fatalf("Classify(% x) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// clientHello records what crypto/tls sends first.
func clientHello(t testing.TB) []byte {
	c, s := net.Pipe()
	go func() {
		_ = tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 4096)
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_ = c.Close()
	return buf[:n]
}

func TestSniff(t *testing.T) {
	hello := clientHello(t)
	t.Run("should classify a client that speaks first without waiting for the deadline", func(t *testing.T) {
		for _, first := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), hello} {
			c, s := tcpPair(t)
			go func() { _, _ = c.Write(first) }()
			start := time.Now()
			p, prefix, err := sniff(s, time.Now().Add(10*time.Second), time.Now().Add(10*time.Second))
			if err != nil || p == NeedMore {
				t.Fatalf("sniff: %v %v", p, err)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("sniff waited %v", time.Since(start))
			}
			// The consumed prefix and the rest make up exactly what the client sent.
			rest := make([]byte, len(first)-len(prefix))
			if _, err := io.ReadFull(s, rest); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(append(prefix, rest...), first) {
				t.Fatal("prefix + rest differ from what was sent")
			}
		}
	})
	t.Run("should call a silent client plaintext once the first-byte deadline passes", func(t *testing.T) {
		_, s := tcpPair(t)
		p, prefix, err := sniff(s, time.Now().Add(50*time.Millisecond), time.Now().Add(10*time.Second))
		if !errors.Is(err, errSilent) || p != Plaintext || len(prefix) != 0 {
			t.Fatalf("got %v %q %v", p, prefix, err)
		}
		// The deadline is cleared: the connection is still usable.
		if err := s.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("should call a stalled ClientHello header TLS, for the handshake to fail", func(t *testing.T) {
		c, s := tcpPair(t)
		_, _ = c.Write(hello[:3])
		p, prefix, err := sniff(s, time.Now().Add(5*time.Second), time.Now().Add(100*time.Millisecond))
		if err != nil || p != TLS || len(prefix) != 3 {
			t.Fatalf("got %v %d %v", p, len(prefix), err)
		}
	})
	t.Run("should report a client that closes without a byte", func(t *testing.T) {
		c, s := tcpPair(t)
		_ = c.Close()
		_, _, err := sniff(s, time.Now().Add(5*time.Second), time.Now().Add(5*time.Second))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("want EOF, got %v", err)
		}
	})
}

func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}
