package kube

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

// stallingAPIServer answers every request with headers and then nothing, as a
// watch on a stuck API server or intermediary does.
func stallingAPIServer(t *testing.T) *httptest.Server {
	end := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-end: // the test is over, failed or not: let Close return
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(end) })
	return srv
}

func TestWatchEndsAStreamThatOutlivesItsTimeout(t *testing.T) {
	srv := stallingAPIServer(t)
	cfg := &Config{Host: srv.URL, CAData: pemCert(srv.Certificate().Raw), Token: "t"}
	c, err := NewClient(cfg, "shop", "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.watchSeconds, c.watchMargin = 1, 200*time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := c.watch(context.Background(), "1", func(*proxy.PodProxyConfig) {})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "stalled") {
			t.Fatalf("want an error saying the watch stalled, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a watch silent past timeoutSeconds plus the margin is still open")
	}
}

// blackhole relays TCP until frozen, then swallows everything both ways without
// closing: a connection that died silently.
type blackhole struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	t.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, up)
			b.mu.Unlock()
			go b.pipe(c, up)
			go b.pipe(up, c)
		}
	}()
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if !b.frozen.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

// A connection to the API server that dies silently must not hold a watch (and
// every request sharing its HTTP/2 connection) forever: health pings close it.
func TestHTTPClientClosesASilentConnection(t *testing.T) {
	idle, ping := h2ReadIdleTimeout, h2PingTimeout
	h2ReadIdleTimeout, h2PingTimeout = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { h2ReadIdleTimeout, h2PingTimeout = idle, ping })

	srv := stallingAPIServer(t)
	bh := newBlackhole(t, srv.Listener.Addr().String())
	cfg := &Config{Host: "https://" + bh.ln.Addr().String(), CAData: pemCert(srv.Certificate().Raw), Token: "t"}
	hc, err := cfg.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(cfg.Host + "/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("want HTTP/2, got %s", resp.Proto)
	}
	bh.frozen.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("want the dead connection reported, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stream on a silent connection is still open: no HTTP/2 health pings")
	}
}
