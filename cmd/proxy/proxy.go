package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshtls/meshtls-operator/internal/proxy"
	"github.com/meshtls/meshtls-operator/internal/proxy/kube"
)

func init() { subcommands["proxy"] = runProxy }

// listFlag is a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

type proxyFlags struct {
	inboundCapture, outboundCapture string
	inboundListen, outboundListen   listFlag
	destinations                    listFlag
	destinationsFile                string
	metricsAddr, healthAddr         string
	certDir, trustDir, tokenFile    string
	kubeconfig, configFile          string
	podName, podNamespace, podUID   string
	trustDomain, keyExchange        string
	upstreamHost                    string
	inboundUpstream                 string
	sniffTimeout, handshakeTimeout  time.Duration
	dialTimeout, statusInterval     time.Duration
	drainTimeout                    time.Duration
	originalProbes                  string
	logLevel                        string
	gcPercent                       int
	pprofAddr                       string
}

func parseProxyFlags(args []string) (*proxyFlags, error) {
	f := &proxyFlags{}
	fs := flag.NewFlagSet("meshtls-proxy proxy", flag.ContinueOnError)
	fs.StringVar(&f.inboundCapture, "inbound-capture-addr", ":15006", "transparent inbound listener (captured connections; the application port is the original destination's); empty: off")
	fs.StringVar(&f.outboundCapture, "outbound-capture-addr", ":15001", "transparent outbound listener; empty: off")
	fs.Var(&f.inboundListen, "inbound-listen", "explicit inbound listener LISTEN_ADDR=APP_PORT, e.g. :18080=8080 (repeatable; for platforms without capture, and tests)")
	fs.Var(&f.outboundListen, "outbound-listen", "explicit outbound listener LISTEN_ADDR=DEST_IP:PORT, e.g. 127.0.0.1:19000=10.0.0.5:8080 (repeatable)")
	fs.Var(&f.destinations, "outbound-destination", "outbound destination that gets mTLS: IP:PORT=spiffe://trust-domain/ns/NS/sa/SA (repeatable); other destinations pass through")
	fs.StringVar(&f.destinationsFile, "outbound-destinations-file", "", "file of outbound destinations, one IP:PORT=SPIFFE-ID per line (# comments)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":15090", "Prometheus metrics listener (/metrics); empty: off")
	fs.StringVar(&f.healthAddr, "health-addr", ":15021", "health listener (/healthz, /readyz, /app-health/...); empty: off")
	fs.StringVar(&f.certDir, "cert-dir", envOr("MESHTLS_CERT_DIR", "/var/run/meshtls/certs"), "directory of the pod's certificate (tls.crt, tls.key) [MESHTLS_CERT_DIR]")
	fs.StringVar(&f.trustDir, "trust-dir", envOr("MESHTLS_TRUST_DIR", "/var/run/meshtls/trust"), "directory of the trust bundle (ca.crt) [MESHTLS_TRUST_DIR]")
	fs.StringVar(&f.tokenFile, "token-file", envOr("MESHTLS_TOKEN_FILE", "/var/run/meshtls/token/token"), "the pod-bound service-account token; the cluster CA is read from ca.crt beside it [MESHTLS_TOKEN_FILE]")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (outside a pod); default: in-cluster")
	fs.StringVar(&f.configFile, "config", "", "a PodProxyConfig (YAML or JSON) to enforce instead of watching the API server; no status is written")
	fs.StringVar(&f.podName, "pod-name", os.Getenv("POD_NAME"), "the pod's name, which is its PodProxyConfig's [POD_NAME]")
	fs.StringVar(&f.podNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "the pod's namespace [POD_NAMESPACE]")
	fs.StringVar(&f.podUID, "pod-uid", os.Getenv("POD_UID"), "the pod's UID; a PodProxyConfig for another UID is not applied [POD_UID]")
	fs.StringVar(&f.trustDomain, "trust-domain", "", "mesh trust domain until the PodProxyConfig names one; default: from the pod's certificate")
	fs.StringVar(&f.keyExchange, "key-exchange", "X25519,P-256", "TLS 1.3 key-exchange groups in order of preference (add X25519MLKEM768 for post-quantum hybrid key exchange, at about twice the handshake CPU)")
	fs.StringVar(&f.upstreamHost, "upstream-host", "127.0.0.1", "address of the application for explicit inbound listeners (and for captured inbound with --inbound-upstream=localhost)")
	fs.StringVar(&f.inboundUpstream, "inbound-upstream", "original", "where captured inbound connections go: original (the pod address and port the client dialled, so a port bound to localhost stays private) or localhost (--upstream-host at the original port: every localhost-only port becomes reachable from the network)")
	fs.DurationVar(&f.sniffTimeout, "sniff-timeout", 200*time.Millisecond, "PERMISSIVE: how long to wait for a client's first byte before treating it as a server-first plaintext client")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", 10*time.Second, "bound on a TLS handshake, and on a STRICT port's wait for a ClientHello")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", 5*time.Second, "bound on connecting to the application or a destination")
	fs.DurationVar(&f.statusInterval, "status-interval", time.Minute, "counters are written to the PodProxyConfig status at most this often while they change")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 5*time.Second, "on SIGTERM, how long open connections may finish after the listeners close")
	fs.StringVar(&f.originalProbes, "original-probes", os.Getenv("MESHTLS_ORIGINAL_PROBES"), "the application's original probes as JSON (injection sets it) [MESHTLS_ORIGINAL_PROBES]")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "address of a net/http/pprof endpoint for profiling; off when empty")
	fs.IntVar(&f.gcPercent, "gc-percent", 50, "Go GC target percentage when GOGC is unset: lower keeps the sidecar's memory smaller at some CPU")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.inboundUpstream != "original" && f.inboundUpstream != "localhost" {
		return nil, fmt.Errorf("--inbound-upstream=%q: want original or localhost", f.inboundUpstream)
	}
	return f, nil
}

func runProxy(ctx context.Context, args []string) error {
	f, err := parseProxyFlags(args)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(f.gcPercent)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	groups, err := proxy.ParseKeyExchange(f.keyExchange)
	if err != nil {
		return fmt.Errorf("--key-exchange: %w", err)
	}
	dests := proxy.StaticDestinations{}
	lines := append([]string(nil), f.destinations...)
	if f.destinationsFile != "" {
		more, err := readLines(f.destinationsFile)
		if err != nil {
			return fmt.Errorf("--outbound-destinations-file: %w", err)
		}
		lines = append(lines, more...)
	}
	for _, l := range lines {
		addr, id, err := proxy.ParseDestination(l)
		if err != nil {
			return err
		}
		dests[addr] = id
	}
	probes, err := proxy.ParseProbes(f.originalProbes)
	if err != nil {
		return err
	}

	metrics := proxy.NewMetrics()
	src := proxy.NewFileSource(f.certDir, f.trustDir, log)
	p := proxy.New(src, proxy.Options{
		SniffTimeout: f.sniffTimeout, HandshakeTimeout: f.handshakeTimeout, DialTimeout: f.dialTimeout,
		KeyExchange: groups, UpstreamHost: f.upstreamHost, InboundToLocalhost: f.inboundUpstream == "localhost",
		TrustDomain: f.trustDomain, PodUID: f.podUID,
		OriginalDst: originalDst, Destinations: dests, Metrics: metrics, Log: log,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 16)
	go func() { _ = src.Run(ctx) }()
	go p.Run(ctx)

	// Configuration: a file, or the pod's PodProxyConfig through the API server.
	var reporter *kube.Reporter
	if f.configFile != "" {
		obj, err := readConfig(f.configFile)
		if err != nil {
			return err
		}
		p.SetConfig(obj)
	} else {
		var cfg *kube.Config
		if f.kubeconfig != "" {
			cfg, err = kube.FromKubeconfig(f.kubeconfig)
		} else {
			cfg, err = kube.InCluster(f.tokenFile)
		}
		if err != nil {
			return err
		}
		client, err := kube.NewClient(cfg, f.podNamespace, f.podName, log)
		if err != nil {
			return err
		}
		writes := metrics.Counter("meshtls_proxy_status_writes_total", "Writes of the PodProxyConfig status.")
		reporter = &kube.Reporter{Writer: client, Proxy: p, Interval: f.statusInterval, Log: log, Writes: func() { writes.Add(1) }}
		go client.Follow(ctx, func(obj *proxy.PodProxyConfig) {
			if obj == nil {
				log.Warn("no PodProxyConfig for this pod; keeping what is applied (every port STRICT until one comes)", "podproxyconfig", f.podNamespace+"/"+f.podName)
				return
			}
			p.SetConfig(obj)
			reporter.Observe(obj)
		})
	}
	reporterDone := make(chan struct{})
	go func() {
		defer close(reporterDone)
		if reporter != nil {
			reporter.Run(ctx)
		}
	}()

	// Listeners.
	listen := func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	serve := func(name string, fn func() error) {
		go func() {
			if err := fn(); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if f.inboundCapture != "" {
		ln, err := listen(f.inboundCapture)
		if err != nil {
			return err
		}
		serve("inbound capture", func() error { return p.ServeInbound(ln, 0) })
	}
	if f.outboundCapture != "" {
		ln, err := listen(f.outboundCapture)
		if err != nil {
			return err
		}
		serve("outbound capture", func() error { return p.ServeOutbound(ln, netip.AddrPort{}) })
	}
	for _, spec := range f.inboundListen {
		addr, port, ok := strings.Cut(spec, "=")
		n, err := strconv.Atoi(port)
		if !ok || err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--inbound-listen %q: want LISTEN_ADDR=APP_PORT", spec)
		}
		ln, err := listen(addr)
		if err != nil {
			return err
		}
		serve("inbound "+spec, func() error { return p.ServeInbound(ln, n) })
	}
	for _, spec := range f.outboundListen {
		addr, dst, ok := strings.Cut(spec, "=")
		ap, err := netip.ParseAddrPort(dst)
		if !ok || err != nil {
			return fmt.Errorf("--outbound-listen %q: want LISTEN_ADDR=DEST_IP:PORT", spec)
		}
		ln, err := listen(addr)
		if err != nil {
			return err
		}
		serve("outbound "+spec, func() error { return p.ServeOutbound(ln, ap) })
	}
	var servers []*http.Server
	if f.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics)
		servers = append(servers, httpServer(f.metricsAddr, mux))
	}
	if f.healthAddr != "" {
		servers = append(servers, httpServer(f.healthAddr, &proxy.Health{Proxy: p, Probes: probes, Host: f.upstreamHost}))
	}
	if f.pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		servers = append(servers, httpServer(f.pprofAddr, mux))
	}
	for _, s := range servers {
		ln, err := listen(s.Addr)
		if err != nil {
			return err
		}
		serve(s.Addr, func() error {
			if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	log.Info("meshtls-proxy started", "inboundCapture", f.inboundCapture, "outboundCapture", f.outboundCapture,
		"inbound", f.inboundListen.String(), "outbound", f.outboundListen.String(), "destinations", len(dests),
		"keyExchange", f.keyExchange, "pod", f.podNamespace+"/"+f.podName)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	// Drain: stop accepting, let open connections finish for a while, write the
	// last counters.
	drain, cancelDrain := context.WithTimeout(context.Background(), f.drainTimeout)
	defer cancelDrain()
	if err := p.Shutdown(drain); err != nil {
		log.Info("connections still open after the drain timeout", "timeout", f.drainTimeout)
	}
	for _, s := range servers {
		_ = s.Close()
	}
	cancel()
	<-reporterDone
	return runErr
}

func httpServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
}

func readLines(path string) ([]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func readConfig(path string) (*proxy.PodProxyConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	obj := &proxy.PodProxyConfig{}
	if err := yaml.Unmarshal(b, obj); err != nil {
		return nil, fmt.Errorf("--config %s is not a PodProxyConfig: %w", path, err)
	}
	if obj.Kind != "PodProxyConfig" {
		return nil, fmt.Errorf("--config %s: kind %q, want PodProxyConfig (apiVersion security.meshtls.io/v1alpha1)", path, obj.Kind)
	}
	if _, err := proxy.ConfigFromSpec(obj); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	return obj, nil
}
