package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Connection results, the "result" label of meshtls_proxy_connections_total.
const (
	ResultMTLS              = "mtls"               // mutual TLS accepted (inbound) or originated (outbound)
	ResultPlaintext         = "plaintext"          // plaintext accepted (PERMISSIVE, DISABLE)
	ResultRejectedPlaintext = "rejected_plaintext" // plaintext refused on a STRICT port
	ResultHandshakeFailure  = "handshake_failure"  // a TLS handshake failed or its peer was refused
	ResultNoCertificate     = "no_certificate"     // TLS needed but no certificate, bundle or trust domain yet
	ResultPassthrough       = "passthrough"        // outbound to a destination the proxy knows nothing about
	ResultClientClosed      = "client_closed"      // the client left before saying anything
	ResultUpstreamError     = "upstream_error"     // the application (or destination) could not be reached
)

// Metrics are the proxy's Prometheus metrics, on their own registry (served on
// 15090 with the Go and process collectors).
type Metrics struct {
	Registry *prometheus.Registry

	connections *prometheus.CounterVec
	received    *prometheus.CounterVec
	sent        *prometheus.CounterVec
	handshake   *prometheus.HistogramVec
	active      *prometheus.GaugeVec
	reloads     *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshtls_proxy_connections_total",
			Help: "Connections by direction (inbound, outbound), application or destination port, mode and result.",
		}, []string{"direction", "port", "mode", "result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshtls_proxy_received_bytes_total",
			Help: "Bytes received from the downstream client (inbound: the remote peer; outbound: the application), by direction and port.",
		}, []string{"direction", "port"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshtls_proxy_sent_bytes_total",
			Help: "Bytes sent to the downstream client, by direction and port.",
		}, []string{"direction", "port"}),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshtls_proxy_tls_handshake_duration_seconds",
			Help:    "Duration of TLS handshakes, by direction and result (ok, failed).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15), // 100µs .. 1.6s
		}, []string{"direction", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshtls_proxy_active_connections",
			Help: "Connections open now, by direction.",
		}, []string{"direction"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshtls_proxy_reloads_total",
			Help: "Applied changes, by what changed (config, certificate).",
		}, []string{"what"}),
	}
	m.Registry.MustRegister(m.connections, m.received, m.sent, m.handshake, m.active, m.reloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) connection(direction string, port int, mode Mode, result string) {
	m.connections.WithLabelValues(direction, strconv.Itoa(port), string(mode), result).Inc()
}

func (m *Metrics) handshakeDone(direction string, seconds float64, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.handshake.WithLabelValues(direction, result).Observe(seconds)
}

// byteCounters returns the received and sent counters of one connection.
func (m *Metrics) byteCounters(direction string, port int) (received, sent prometheus.Counter) {
	p := strconv.Itoa(port)
	return m.received.WithLabelValues(direction, p), m.sent.WithLabelValues(direction, p)
}
