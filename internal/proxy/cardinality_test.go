package proxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// A client chooses the port it connects to: ports the proxy was not told about
// must share one "other" series, not make one each.
func TestMetricsUnknownPortsShareOneSeries(t *testing.T) {
	var next atomic.Int32
	next.Store(20000)
	opts := Options{PodUID: "uid-1", SniffTimeout: 50 * time.Millisecond, HandshakeTimeout: time.Second,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.7"), uint16(next.Add(1))), nil
		}}
	p := New(&MemorySource{}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	p.SetConfig(ppc("sha256:a", ModeStrict, PortMTLS{Port: 8080, Mode: ModeStrict}))
	ln := listen(t)
	go func() { _ = p.ServeInbound(ln, 0) }()

	const n = 1000
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		_, _ = c.Read(make([]byte, 1)) // the proxy refuses plaintext on a STRICT port
		_ = c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Counters().RejectedPlaintext.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// A known port keeps its number.
	p.inbound(closedConn(t), 8080, netip.AddrPort{})

	f := p.Metrics().connections
	f.mu.RLock()
	ports := map[string]uint64{}
	for _, s := range f.series {
		ports[s.values[1]] += s.count.Load()
	}
	f.mu.RUnlock()
	if len(ports) != 2 || ports[OtherPort] != n || ports["8080"] != 1 {
		t.Fatalf("want %d connections in one %q series and 8080 by number, got %v", n, OtherPort, ports)
	}
}

func TestMetricsPortLabelCap(t *testing.T) {
	m := NewMetrics()
	for port := 1; port <= 2*MaxPortLabels; port++ {
		m.connection(inbound, m.portLabel(port, true), ModeStrict, ResultMTLS)
	}
	if got := len(m.connections.series); got != MaxPortLabels+1 {
		t.Fatalf("want at most %d port series plus %q, got %d", MaxPortLabels, OtherPort, got)
	}
}

// closedConn is the proxy's end of a connection whose client already left.
func closedConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	_ = a.Close()
	t.Cleanup(func() { _ = b.Close() })
	return b
}
