package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

// harness runs a proxy in front of an echo application, on loopback.
type harness struct {
	t       *testing.T
	ca      *testpki.CA
	server  *testpki.Leaf // the proxy's own certificate
	client  *testpki.Leaf // a good client certificate
	src     *MemorySource
	p       *Proxy
	appPort int
	addr    string // the proxy's inbound listener for appPort
}

type harnessOption func(*Options)

func newHarness(t *testing.T, app func(net.Conn), opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, ca: testpki.MustCA("mesh"), src: &MemorySource{}}
	h.server = h.ca.MustIssue(serverID)
	h.client = h.ca.MustIssue(clientID)
	h.src.Set(&h.server.TLS, h.ca.CertPEM)

	if app == nil {
		app = echo
	}
	appLn := listen(t)
	go acceptLoop(appLn, app)
	h.appPort = appLn.Addr().(*net.TCPAddr).Port

	o := Options{SniffTimeout: 100 * time.Millisecond, HandshakeTimeout: 2 * time.Second, PodUID: "uid-1"}
	for _, f := range opts {
		f(&o)
	}
	h.p = New(h.src, o)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go h.p.Run(ctx)
	ln := listen(t)
	h.addr = ln.Addr().String()
	go func() { _ = h.p.ServeInbound(ln, h.appPort) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.p.Shutdown(ctx)
	})
	return h
}

func listen(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go handle(c)
	}
}

// echo answers everything it reads, then half-closes.
func echo(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// ppc builds a PodProxyConfig for the harness's pod.
func ppc(hash string, mode Mode, ports ...PortMTLS) *PodProxyConfig {
	return &PodProxyConfig{
		Metadata: ObjectMeta{Name: "pod", Namespace: "shop", Generation: 1},
		Spec: PodProxyConfigSpec{
			PodUID: "uid-1", Identity: serverID, CertificateSecretName: "meshtls-finance-tls",
			Inbound:    InboundConfig{Mode: mode, Ports: ports},
			ConfigHash: hash,
		},
	}
}

// mtls dials the proxy with a client certificate (nil: none) and returns the
// connection after the handshake.
func (h *harness) mtls(cert *tls.Certificate, mods ...func(*tls.Config)) (*tls.Conn, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	for _, m := range mods {
		m(cfg)
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", h.addr, cfg)
	if err != nil {
		return nil, err
	}
	// In TLS 1.3 the server's verdict on the client certificate arrives after the
	// client's handshake ends: a round trip tells.
	if err := roundTrip(c, "hello"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (h *harness) plain() (net.Conn, error) {
	return net.DialTimeout("tcp", h.addr, 2*time.Second)
}

// roundTrip writes msg and expects it echoed.
func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: want %q, got %q", msg, buf)
	}
	return nil
}

// refused says whether a connection was closed by the proxy without a reply.
func refused(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func (h *harness) wantCounters(mtls, plaintext, rejected, failures int64) {
	h.t.Helper()
	c := h.p.Counters()
	// Counters move after the proxy's side of a connection is done: give it a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := [4]int64{c.MTLS.Load(), c.Plaintext.Load(), c.RejectedPlaintext.Load(), c.HandshakeFailures.Load()}
		want := [4]int64{mtls, plaintext, rejected, failures}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("counters mtls/plaintext/rejectedPlaintext/handshakeFailures: want %v, got %v", want, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustContain(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("want an error containing %q, got %v", want, err)
	}
}
