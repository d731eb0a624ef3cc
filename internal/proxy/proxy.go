package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Options are the proxy's settings (the command's flags).
type Options struct {
	// SniffTimeout is how long a PERMISSIVE port waits for a client's first byte
	// before treating it as a server-first plaintext client (MySQL, SMTP). A client
	// that speaks first is classified as soon as its bytes arrive, without waiting.
	SniffTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake, from accept to the end, and how long a
	// STRICT port waits for a ClientHello.
	HandshakeTimeout time.Duration
	// DialTimeout bounds connecting to the application or a destination.
	DialTimeout time.Duration
	// KeyExchange are the TLS 1.3 groups, in order of preference.
	KeyExchange []tls.CurveID
	// UpstreamHost is where the application listens for explicit inbound listeners,
	// and for the transparent one with InboundToLocalhost (127.0.0.1).
	UpstreamHost string
	// InboundToLocalhost makes the transparent inbound listener forward to
	// UpstreamHost at the original port, as before: then a port the application
	// binds to localhost only becomes reachable from the network. By default it
	// forwards to the connection's original destination (the pod's own address and
	// port), so the application sees what it would without the proxy.
	InboundToLocalhost bool
	// TrustDomain is the mesh trust domain to use until a PodProxyConfig names one
	// (through spec.identity); empty: taken from the pod's own certificate.
	TrustDomain string
	// PodUID is the proxy's pod; a PodProxyConfig for another UID is not applied.
	PodUID string
	// OriginalDst recovers where a captured connection was going (SO_ORIGINAL_DST);
	// nil: only explicit listeners work.
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// Destinations are the outbound destinations that get mTLS.
	Destinations Destinations
	// Metrics receives the proxy's metrics; nil: private ones.
	Metrics *Metrics
	// Log receives the proxy's logs; nil: discarded.
	Log *slog.Logger
}

func (o *Options) defaults() {
	if o.SniffTimeout <= 0 {
		o.SniffTimeout = 200 * time.Millisecond
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if len(o.KeyExchange) == 0 {
		o.KeyExchange = DefaultKeyExchange
	}
	if o.UpstreamHost == "" {
		o.UpstreamHost = "127.0.0.1"
	}
	if o.Destinations == nil {
		o.Destinations = StaticDestinations{}
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Proxy enforces a pod's inbound modes and originates its outbound mTLS.
type Proxy struct {
	opts Options
	src  Source

	// state is everything a connection needs, rebuilt on every change of config or
	// certificate material and published here: the per-connection cost of a reload
	// is one pointer load.
	state atomic.Pointer[state]

	mu           sync.Mutex // serialises rebuilds
	config       *Config
	rejected     string // why the last PodProxyConfig was not applied
	rejectedHash string
	changed      chan struct{}

	counters Counters

	conns     sync.WaitGroup
	listeners sync.Map // net.Listener -> struct{}
	// explicitIn and explicitOut are the ports of explicit listeners (int ->
	// struct{}): known ports, labelled by number in the metrics.
	explicitIn, explicitOut sync.Map
	closing                 atomic.Bool
}

// Counters are the inbound connection counters reported in the PodProxyConfig
// status.
type Counters struct {
	MTLS, Plaintext, RejectedPlaintext, HandshakeFailures atomic.Int64
	// LastPlaintext is the UnixNano of the last accepted plaintext connection.
	LastPlaintext atomic.Int64
}

// state is one immutable snapshot of what the data path enforces.
type state struct {
	config      *Config
	material    *Material
	trustDomain spiffeid.TrustDomain
	// server terminates inbound mTLS; nil when there is no certificate, bundle or
	// trust domain: then every TLS client is refused.
	server *tls.Config
	// noTLS says why server is nil.
	noTLS string
	// clients caches outbound client configurations per expected identity.
	clients sync.Map // spiffeid.ID -> *tls.Config
	// verified caches accepted peer chains for this trust bundle and trust domain.
	verified *verifyCache
	// cert is the verdict on the pod's own certificate.
	cert CertificateVerdict
}

// CertificateVerdict is the proxy's view of its own certificate: the
// CertificateReady condition.
type CertificateVerdict struct {
	Ready   bool
	Reason  string
	Message string
	// NotAfter is when a ready certificate expires.
	NotAfter time.Time
}

// New makes a proxy over a certificate source. Call Run to follow the source.
func New(src Source, opts Options) *Proxy {
	opts.defaults()
	p := &Proxy{opts: opts, src: src, changed: make(chan struct{}, 1)}
	p.rebuild()
	return p
}

// Metrics returns the proxy's metrics.
func (p *Proxy) Metrics() *Metrics { return p.opts.Metrics }

// Counters returns the live inbound counters.
func (p *Proxy) Counters() *Counters { return &p.counters }

// Changed receives a value after every change of the applied configuration or of
// the certificate verdict (coalesced).
func (p *Proxy) Changed() <-chan struct{} { return p.changed }

// Run follows the certificate source and re-checks the certificate when it expires,
// until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	updates := p.src.Subscribe()
	p.rebuild() // anything published before the subscription
	for {
		// A certificate that expires turns CertificateReady false at that moment.
		var expiry <-chan time.Time
		var timer *time.Timer
		if st := p.state.Load(); st.cert.Ready {
			timer = time.NewTimer(time.Until(st.cert.NotAfter) + time.Second)
			expiry = timer.C
		}
		select {
		case <-ctx.Done():
		case <-updates:
			p.opts.Metrics.reload("certificate")
			p.rebuild()
		case <-expiry:
			p.rebuild()
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// SetConfig applies a PodProxyConfig (nil: keep what is applied, as when the
// object is deleted or the API server is unreachable: an applied STRICT port never
// weakens because the proxy lost sight of its configuration).
func (p *Proxy) SetConfig(obj *PodProxyConfig) {
	if obj == nil {
		return
	}
	c, err := ConfigFromSpec(obj)
	if err == nil && p.opts.PodUID != "" && c.PodUID == "" {
		err = fmt.Errorf("spec.podUID is empty, so it cannot be told from a previous pod's of the same name (this pod's UID is %s); waiting for the operator to set it", p.opts.PodUID)
	}
	if err == nil && p.opts.PodUID != "" && c.PodUID != "" && c.PodUID != p.opts.PodUID {
		err = fmt.Errorf("spec.podUID %s is not this pod's UID %s (a previous pod of the same name?); waiting for the operator to update it", c.PodUID, p.opts.PodUID)
	}
	p.mu.Lock()
	if err != nil {
		p.rejected, p.rejectedHash = err.Error(), obj.Spec.ConfigHash
		p.mu.Unlock()
		p.opts.Log.Error("not applying the PodProxyConfig", "hash", obj.Spec.ConfigHash, "err", err)
		p.notify()
		return
	}
	p.rejected, p.rejectedHash = "", ""
	p.config = c
	p.mu.Unlock()
	p.opts.Metrics.reload("config")
	p.opts.Log.Info("applying the PodProxyConfig", "hash", c.Hash, "inbound", c.String())
	p.rebuild()
}

// Applied says what the proxy enforces: the Applied condition.
type Applied struct {
	// Config is the enforced configuration; nil before the first one.
	Config *Config
	// Rejected is why the latest PodProxyConfig was not applied; empty when it was.
	Rejected     string
	RejectedHash string
}

// Applied returns the applied configuration and the verdict on the last one seen.
func (p *Proxy) Applied() Applied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Applied{Config: p.config, Rejected: p.rejected, RejectedHash: p.rejectedHash}
}

// Certificate returns the verdict on the pod's own certificate.
func (p *Proxy) Certificate() CertificateVerdict { return p.state.Load().cert }

// Ready says whether the proxy is ready to serve: a configuration is applied and,
// where a port accepts only mTLS, the pod's own certificate is valid.
func (p *Proxy) Ready() (bool, string) {
	st := p.state.Load()
	if st.config == nil {
		return false, "no PodProxyConfig applied yet"
	}
	if st.config.NeedsCertificate() && st.server == nil {
		return false, "a STRICT port needs a certificate: " + st.noTLS
	}
	// A certificate that loads is not enough: it must be valid for the pod's own
	// identity (not expired, not another workload's), or every peer refuses it.
	if st.config.NeedsCertificate() && !st.cert.Ready {
		return false, "a STRICT port needs a valid certificate: " + st.cert.Reason + ": " + st.cert.Message
	}
	return true, "ok"
}

func (p *Proxy) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// rebuild makes a new state from the applied config and the source's material.
func (p *Proxy) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	mat := p.src.Current()
	st := &state{config: p.config, material: mat}
	prev := p.state.Load()

	switch {
	case st.config != nil && !st.config.Identity.IsZero():
		st.trustDomain = st.config.Identity.TrustDomain()
	case p.opts.TrustDomain != "":
		td, err := spiffeid.TrustDomainFromString(p.opts.TrustDomain)
		if err == nil {
			st.trustDomain = td
		}
	case mat.Certificate != nil && mat.Certificate.Leaf != nil && len(mat.Certificate.Leaf.URIs) == 1:
		if id, err := spiffeid.FromURI(mat.Certificate.Leaf.URIs[0]); err == nil {
			st.trustDomain = id.TrustDomain()
		}
	}

	switch {
	case mat.Certificate == nil:
		st.noTLS = "no certificate yet"
		if mat.CertificateErr != nil {
			st.noTLS = mat.CertificateErr.Error()
		}
	case mat.Roots == nil:
		st.noTLS = "no trust bundle yet"
		if mat.RootsErr != nil {
			st.noTLS = mat.RootsErr.Error()
		}
	case st.trustDomain.IsZero():
		st.noTLS = "the trust domain is not known (no PodProxyConfig identity, no --trust-domain, no SPIFFE ID in the certificate)"
	}
	st.cert = p.certificateVerdict(st, time.Now())

	// A new TLS configuration (and so new ticket keys) only when what it verifies
	// against changed; a mode change keeps sessions resumable.
	if st.noTLS == "" {
		if prev != nil && prev.server != nil && prev.material == mat && prev.trustDomain == st.trustDomain {
			st.server, st.verified = prev.server, prev.verified
		} else {
			st.server, st.verified = serverConfig(mat.Certificate, p.opts.KeyExchange, p.verifyClient), newVerifyCache()
		}
	}
	p.state.Store(st)
	p.notify()
}

// certificateVerdict checks the pod's own certificate as a peer would check it,
// against the pod's expected identity when the configuration names one.
func (p *Proxy) certificateVerdict(st *state, now time.Time) CertificateVerdict {
	mat := st.material
	switch {
	case mat.Certificate == nil && mat.CertificateErr != nil:
		return CertificateVerdict{Reason: "InvalidCertificate", Message: mat.CertificateErr.Error()}
	case mat.Certificate == nil:
		msg := "no certificate in the mounted Secret yet"
		if st.config != nil && !st.config.CertificateExpected {
			msg = "the mesh has no issuer (no MeshMTLSPolicy): no certificate will be issued, STRICT ports refuse every connection"
		}
		return CertificateVerdict{Reason: "NoCertificate", Message: msg}
	case mat.Roots == nil:
		msg := "no trust bundle (ConfigMap meshtls-trust-bundle, key ca.crt) yet"
		if mat.RootsErr != nil {
			msg = mat.RootsErr.Error()
		}
		return CertificateVerdict{Reason: "NoTrustBundle", Message: msg}
	case st.trustDomain.IsZero():
		return CertificateVerdict{Reason: "NoTrustDomain", Message: st.noTLS}
	}
	pol := PeerPolicy{TrustDomain: st.trustDomain, Roots: mat.Roots, Now: now}
	if st.config != nil {
		pol.Expected = st.config.Identity
	}
	chain := make([]*x509.Certificate, 0, len(mat.Certificate.Certificate))
	chain = append(chain, mat.Certificate.Leaf)
	for _, der := range mat.Certificate.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return CertificateVerdict{Reason: "InvalidCertificate", Message: "the certificate chain does not parse: " + err.Error()}
		}
		chain = append(chain, c)
	}
	id, err := VerifyPeer(chain, pol)
	if err != nil {
		reason := "InvalidCertificate"
		if now.After(mat.Certificate.Leaf.NotAfter) {
			reason = "Expired"
		}
		return CertificateVerdict{Reason: reason, Message: "the pod's own certificate would be refused by its peers: " + trimPeer(err.Error())}
	}
	return CertificateVerdict{Ready: true, Reason: "Loaded", NotAfter: mat.Certificate.Leaf.NotAfter,
		Message: fmt.Sprintf("certificate of %s valid until %s", id, mat.Certificate.Leaf.NotAfter.UTC().Format(time.RFC3339))}
}

func trimPeer(s string) string {
	const prefix = "the peer's "
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// verifyClient is the inbound VerifyConnection: the access decision against the
// trust bundle and trust domain current now, on full and resumed handshakes alike.
func (p *Proxy) verifyClient(cs tls.ConnectionState) error {
	st := p.state.Load()
	pol := PeerPolicy{TrustDomain: st.trustDomain, Roots: st.material.Roots, Now: time.Now(), Role: PeerClient}
	if st.verified == nil {
		_, err := VerifyPeer(cs.PeerCertificates, pol)
		return err
	}
	_, err := st.verified.verify(cs.PeerCertificates, pol)
	return err
}

// clientConfig returns the outbound TLS configuration for a destination that must
// prove expected; nil when the proxy has no usable certificate.
func (st *state) clientConfig(p *Proxy, expected spiffeid.ID) *tls.Config {
	if st.noTLS != "" {
		return nil
	}
	if c, ok := st.clients.Load(expected); ok {
		return c.(*tls.Config)
	}
	c := clientConfig(st.material.Certificate, p.opts.KeyExchange, func(cs tls.ConnectionState) error {
		cur := p.state.Load()
		pol := PeerPolicy{TrustDomain: cur.trustDomain, Roots: cur.material.Roots, Now: time.Now(), Role: PeerServer, Expected: expected}
		if cur.verified == nil {
			_, err := VerifyPeer(cs.PeerCertificates, pol)
			return err
		}
		_, err := cur.verified.verify(cs.PeerCertificates, pol)
		return err
	})
	actual, _ := st.clients.LoadOrStore(expected, c)
	return actual.(*tls.Config)
}

// ServeInbound accepts connections on ln for the application port appPort, or,
// with appPort 0, captured connections whose original destination port is the
// application's (the transparent listener on 15006). It returns when ln is closed.
func (p *Proxy) ServeInbound(ln net.Listener, appPort int) error {
	if appPort == 0 && p.opts.OriginalDst == nil {
		return errors.New("transparent inbound needs SO_ORIGINAL_DST support, which this build lacks")
	}
	if appPort != 0 {
		p.explicitIn.Store(appPort, struct{}{})
	}
	return p.serve(ln, func(c net.Conn) {
		if appPort != 0 {
			p.inbound(c, appPort, netip.AddrPort{})
			return
		}
		dst, err := p.originalDst(c)
		if err != nil {
			p.opts.Log.Debug("no original destination", "remote", c.RemoteAddr(), "err", err)
			_ = c.Close()
			return
		}
		if isLoop(ln, dst) {
			_ = c.Close()
			return
		}
		up := netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		if p.opts.InboundToLocalhost {
			up = netip.AddrPort{}
		}
		p.inbound(c, int(dst.Port()), up)
	})
}

// ServeOutbound accepts connections on ln bound for dst, or, with a zero dst,
// captured connections bound for their original destination (the transparent
// listener on 15001). It returns when ln is closed.
func (p *Proxy) ServeOutbound(ln net.Listener, dst netip.AddrPort) error {
	if !dst.IsValid() && p.opts.OriginalDst == nil {
		return errors.New("transparent outbound needs SO_ORIGINAL_DST support, which this build lacks")
	}
	if dst.IsValid() {
		p.explicitOut.Store(int(dst.Port()), struct{}{})
	}
	return p.serve(ln, func(c net.Conn) {
		to := dst
		if !to.IsValid() {
			var err error
			if to, err = p.originalDst(c); err != nil {
				p.opts.Log.Debug("no original destination", "remote", c.RemoteAddr(), "err", err)
				_ = c.Close()
				return
			}
			if isLoop(ln, to) {
				_ = c.Close()
				return
			}
		}
		p.outbound(c, to)
	})
}

func (p *Proxy) originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a TCP connection")
	}
	return p.opts.OriginalDst(tc)
}

// isLoop refuses a connection made straight to a capture listener: forwarding it
// would come back to the same listener.
func isLoop(ln net.Listener, dst netip.AddrPort) bool {
	a, ok := ln.Addr().(*net.TCPAddr)
	return ok && int(dst.Port()) == a.Port && (a.IP.IsUnspecified() || a.AddrPort().Addr().Unmap() == dst.Addr().Unmap())
}

func (p *Proxy) serve(ln net.Listener, handle func(net.Conn)) error {
	p.listeners.Store(ln, struct{}{})
	defer p.listeners.Delete(ln)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, as net/http does.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				p.opts.Log.Warn("accept failed; retrying", "listener", ln.Addr(), "in", delay, "err", err)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			handle(c)
		}()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// Shutdown closes the listeners and waits for open connections to end, at most
// until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.closing.Store(true)
	p.listeners.Range(func(k, _ any) bool {
		_ = k.(net.Listener).Close()
		return true
	})
	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const (
	inbound  = "inbound"
	outbound = "outbound"
)

// inbound handles one connection for an application port. up is where the
// application is reached: the original destination; invalid: UpstreamHost:port.
func (p *Proxy) inbound(c net.Conn, port int, up netip.AddrPort) {
	m := p.opts.Metrics
	m.activeAdd(inbound, 1)
	defer m.activeAdd(inbound, -1)
	start := time.Now()
	st := p.state.Load()
	mode := st.config.ModeFor(port)
	lbl := p.inboundLabel(st, port)

	if mode == ModeDisable {
		// No sniffing: bytes pass as they come, TLS included.
		p.plaintext(c, nil, port, up, lbl, mode)
		return
	}
	firstByte := start.Add(p.opts.HandshakeTimeout)
	if mode == ModePermissive {
		firstByte = start.Add(p.opts.SniffTimeout)
	}
	proto, prefix, err := sniff(c, firstByte, start.Add(p.opts.HandshakeTimeout))
	if err != nil && !errors.Is(err, errSilent) {
		m.connection(inbound, lbl, mode, ResultClientClosed)
		_ = c.Close()
		return
	}
	// The configuration may have changed while the client was deciding what to say:
	// enforce the one current now.
	st = p.state.Load()
	mode = st.config.ModeFor(port)
	lbl = p.inboundLabel(st, port)
	switch {
	case proto == Plaintext && mode == ModeStrict:
		p.counters.RejectedPlaintext.Add(1)
		m.connection(inbound, lbl, mode, ResultRejectedPlaintext)
		_ = c.Close()
	case proto == Plaintext || mode == ModeDisable:
		p.plaintext(c, prefix, port, up, lbl, mode)
	default:
		p.terminate(c, prefix, port, up, lbl, mode, st, start)
	}
}

// inboundLabel is the metrics port label of an inbound port: its number when the
// PodProxyConfig names it in inbound.ports or an explicit listener serves it,
// else "other" (a client chooses the port it connects to).
func (p *Proxy) inboundLabel(st *state, port int) string {
	known := false
	if st.config != nil {
		_, known = st.config.Ports[port]
	}
	if !known {
		_, known = p.explicitIn.Load(port)
	}
	return p.opts.Metrics.portLabel(port, known)
}

// plaintext forwards a plaintext (or DISABLE) connection to the application,
// replaying the sniffed prefix first.
func (p *Proxy) plaintext(c net.Conn, prefix []byte, port int, to netip.AddrPort, lbl string, mode Mode) {
	m := p.opts.Metrics
	p.counters.Plaintext.Add(1)
	p.counters.LastPlaintext.Store(time.Now().UnixNano())
	up, err := p.dialApp(port, to)
	if err != nil {
		m.connection(inbound, lbl, mode, ResultUpstreamError)
		_ = c.Close()
		return
	}
	m.connection(inbound, lbl, mode, ResultPlaintext)
	received, sent := m.byteCounters(inbound, lbl)
	if len(prefix) > 0 {
		if _, err := up.Write(prefix); err != nil {
			_ = c.Close()
			_ = up.Close()
			return
		}
		received.Add(len(prefix))
	}
	relay(c, up, received, sent)
}

// terminate runs the TLS handshake of an inbound mTLS connection and forwards it.
func (p *Proxy) terminate(c net.Conn, prefix []byte, port int, to netip.AddrPort, lbl string, mode Mode, st *state, start time.Time) {
	m := p.opts.Metrics
	if st.server == nil {
		p.counters.HandshakeFailures.Add(1)
		m.connection(inbound, lbl, mode, ResultNoCertificate)
		p.opts.Log.Debug("refusing a TLS client: no usable certificate", "port", port, "why", st.noTLS)
		_ = c.Close()
		return
	}
	tc := tls.Server(&prefixConn{Conn: c, prefix: prefix}, st.server)
	_ = c.SetDeadline(start.Add(p.opts.HandshakeTimeout))
	hsStart := time.Now()
	err := tc.Handshake()
	m.handshakeDone(inbound, time.Since(hsStart).Seconds(), err == nil)
	if err != nil {
		p.counters.HandshakeFailures.Add(1)
		m.connection(inbound, lbl, mode, ResultHandshakeFailure)
		p.opts.Log.Debug("inbound handshake failed", "port", port, "remote", c.RemoteAddr(), "err", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	p.counters.MTLS.Add(1)
	up, err := p.dialApp(port, to)
	if err != nil {
		m.connection(inbound, lbl, mode, ResultUpstreamError)
		_ = tc.Close()
		return
	}
	m.connection(inbound, lbl, mode, ResultMTLS)
	received, sent := m.byteCounters(inbound, lbl)
	relay(tc, up, received, sent)
}

// dialApp connects to the application: at to, the original destination of a
// captured connection, or (to invalid) at UpstreamHost:port. The original
// destination is dialled from its own address: binding fails unless it is one of
// the pod's own, so the proxy never relays a connection someone routed through
// the pod to another host. The capture rules leave the proxy's connection alone
// (its user is excluded, and it leaves through lo).
func (p *Proxy) dialApp(port int, to netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: p.opts.DialTimeout}
	addr := net.JoinHostPort(p.opts.UpstreamHost, strconv.Itoa(port))
	if to.IsValid() {
		addr = to.String()
		d.LocalAddr = &net.TCPAddr{IP: to.Addr().AsSlice(), Zone: to.Addr().Zone()}
	}
	up, err := d.Dial("tcp", addr)
	if err != nil {
		p.opts.Log.Debug("the application port does not answer", "address", addr, "err", err)
	}
	return up, err
}

// outbound handles one connection from the application to dst.
func (p *Proxy) outbound(c net.Conn, dst netip.AddrPort) {
	m := p.opts.Metrics
	m.activeAdd(outbound, 1)
	defer m.activeAdd(outbound, -1)
	port := int(dst.Port())
	expected, meshed := p.opts.Destinations.Lookup(dst)
	_, explicit := p.explicitOut.Load(port)
	lbl := m.portLabel(port, meshed || explicit)
	mode := Mode("NONE")
	if meshed {
		mode = "MTLS"
	}
	up, err := net.DialTimeout("tcp", dst.String(), p.opts.DialTimeout)
	if err != nil {
		m.connection(outbound, lbl, mode, ResultUpstreamError)
		_ = c.Close()
		return
	}
	received, sent := m.byteCounters(outbound, lbl)
	if !meshed {
		m.connection(outbound, lbl, mode, ResultPassthrough)
		relay(c, up, received, sent)
		return
	}
	// A destination that must get mTLS never gets plaintext: no certificate, no
	// connection.
	cfg := p.state.Load().clientConfig(p, expected)
	if cfg == nil {
		m.connection(outbound, lbl, mode, ResultNoCertificate)
		_ = c.Close()
		_ = up.Close()
		return
	}
	tc := tls.Client(up, cfg)
	_ = up.SetDeadline(time.Now().Add(p.opts.HandshakeTimeout))
	hsStart := time.Now()
	err = tc.Handshake()
	m.handshakeDone(outbound, time.Since(hsStart).Seconds(), err == nil)
	if err != nil {
		m.connection(outbound, lbl, mode, ResultHandshakeFailure)
		p.opts.Log.Debug("outbound handshake failed", "destination", dst, "expected", expected, "err", err)
		_ = c.Close()
		_ = up.Close()
		return
	}
	_ = up.SetDeadline(time.Time{})
	m.connection(outbound, lbl, mode, ResultMTLS)
	relay(c, tc, received, sent)
}
