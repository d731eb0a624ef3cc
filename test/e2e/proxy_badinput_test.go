package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestProxyBadInput throws what a hostile or broken network sends at a STRICT port:
// the proxy must refuse it, close it within the handshake timeout, stay up with
// bounded memory, and keep serving good clients meanwhile.
func TestProxyBadInput(t *testing.T) {
	pki := newMeshPKI(t, e2eServerID)
	app := echoServer(t)
	addr := freeAddr(t)
	const handshakeTimeout = time.Second
	p := startProxy(t, "--config="+configFile(t, "STRICT", nil), "--cert-dir="+pki.certDir, "--trust-dir="+pki.trustDir,
		"--inbound-listen="+addr+"="+strconv.Itoa(app), "--handshake-timeout="+handshakeTimeout.String(), "--log-level=info")
	waitReady(t, p)
	hello := clientHelloBytes(t)

	good := func(t *testing.T) {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pki.client.TLS}})
		if err != nil {
			t.Fatalf("a good client was refused: %v", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("good")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "good" {
			t.Fatalf("a good client got %q %v", b, err)
		}
	}
	// closedWithin sends first, then expects the proxy to close the connection
	// within d, without a byte from the application.
	closedWithin := func(t *testing.T, first []byte, d time.Duration, halfClose bool) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if len(first) > 0 {
			if _, err := c.Write(first); err != nil {
				t.Fatal(err)
			}
		}
		if halfClose {
			_ = c.(*net.TCPConn).CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(d))
		// The proxy may answer with TLS records (a ServerHello, an alert), but the
		// application's echo of our bytes must never come back.
		got, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the proxy kept the connection open past %v", d)
		}
		if len(first) > 0 && bytes.Contains(got, first[:min(len(first), 16)]) {
			t.Fatal("bytes reached the application")
		}
	}

	t.Run("should refuse garbage", func(t *testing.T) {
		junk := make([]byte, 4096)
		_, _ = rand.Read(junk)
		junk[0] = 'G' // not a handshake record
		closedWithin(t, junk, 2*time.Second, false)
	})
	t.Run("should refuse garbage dressed as a TLS record", func(t *testing.T) {
		junk := make([]byte, 512)
		_, _ = rand.Read(junk)
		copy(junk, []byte{0x16, 0x03, 0x01, 0x01, 0xfb, 0x01})
		closedWithin(t, junk, 2*time.Second, false)
	})
	t.Run("should close a truncated ClientHello when the client stops sending", func(t *testing.T) {
		closedWithin(t, hello[:len(hello)/2], 2*time.Second, true)
	})
	t.Run("should close a truncated ClientHello that stalls, at the handshake timeout", func(t *testing.T) {
		closedWithin(t, hello[:len(hello)/2], handshakeTimeout+time.Second, false)
	})
	t.Run("should close a handshake the client never finishes, at the handshake timeout", func(t *testing.T) {
		closedWithin(t, hello, handshakeTimeout+time.Second, false)
	})
	t.Run("should close a client that says nothing, at the handshake timeout", func(t *testing.T) {
		closedWithin(t, nil, handshakeTimeout+time.Second, false)
	})
	good(t)

	t.Run("should survive 10,000 half-open connections with bounded memory and serve good clients", func(t *testing.T) {
		const n = 10000
		baseRSS := p.rssKiB(t)
		conns := make([]net.Conn, n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var dialErr error
		next := make(chan int)
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					c, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						mu.Lock()
						dialErr = err
						mu.Unlock()
						continue
					}
					// Half a ClientHello header: the proxy must wait for the rest,
					// then give up at the handshake timeout.
					_, _ = c.Write(hello[:3])
					conns[i] = c
				}
			}()
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		if dialErr != nil {
			t.Fatalf("dialing: %v", dialErr)
		}
		opened := time.Since(start)
		peak := p.rssKiB(t)
		good(t)
		if code, _ := p.get("/healthz"); code != 200 {
			t.Fatal("the proxy stopped answering /healthz")
		}
		// Every half-open connection is closed by the proxy, none left hanging.
		deadline := time.Now().Add(opened + handshakeTimeout + 10*time.Second)
		for i, c := range conns {
			_ = c.SetReadDeadline(deadline)
			if _, err := c.Read(make([]byte, 64)); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("half-open connection %d still open %v after the last was opened", i, time.Since(start)-opened)
			}
			c.Close()
		}
		peak = max(peak, p.rssKiB(t))
		t.Logf("10,000 half-open connections opened in %v; proxy RSS %d KiB before, %d KiB at peak", opened.Round(time.Millisecond), baseRSS, peak)
		if peak > 256<<10 {
			t.Errorf("proxy RSS %d KiB with 10,000 half-open connections: want under 256 MiB", peak)
		}
		good(t)
		if got := p.metric(t, "meshtls_proxy_active_connections", `direction="inbound"`); got > 5 {
			t.Errorf("%v inbound connections still active after the flood", got)
		}
	})
}

// clientHelloBytes records the first flight crypto/tls sends.
func clientHelloBytes(t *testing.T) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() { _ = tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake() }()
	buf := make([]byte, 4096)
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.Close()
	return buf[:n]
}
