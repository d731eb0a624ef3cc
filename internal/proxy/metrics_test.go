package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsExposition parses the proxy's hand-written exposition with
// Prometheus' own parser.
func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.connection(inbound, "8080", ModeStrict, ResultMTLS)
	m.connection(inbound, "8080", ModeStrict, ResultMTLS)
	m.connection(inbound, "9090", ModePermissive, ResultPlaintext)
	rx, tx := m.byteCounters(inbound, "8080")
	rx.Add(100)
	tx.Add(7)
	m.handshakeDone(inbound, 0.0003, true)
	m.handshakeDone(inbound, 5, false)
	m.activeAdd(outbound, 3)
	writes := m.Counter("meshtls_proxy_status_writes_total", "Writes.")
	writes.Add(2)
	m.connection(outbound, "1", Mode(`we"ird\`), "x\ny")

	var buf bytes.Buffer
	m.write(&buf)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, buf.String())
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s", name)
		}
		for _, s := range f.GetMetric() {
			if matches(s, labels) {
				switch {
				case s.Counter != nil:
					return s.Counter.GetValue()
				case s.Gauge != nil:
					return s.Gauge.GetValue()
				case s.Histogram != nil:
					return float64(s.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshtls_proxy_connections_total", map[string]string{"port": "8080", "mode": "STRICT", "result": "mtls"}, 2},
		{"meshtls_proxy_connections_total", map[string]string{"port": "9090", "result": "plaintext"}, 1},
		{"meshtls_proxy_connections_total", map[string]string{"mode": `we"ird\`, "result": "x\ny"}, 1},
		{"meshtls_proxy_received_bytes_total", map[string]string{"port": "8080"}, 100},
		{"meshtls_proxy_sent_bytes_total", map[string]string{"port": "8080"}, 7},
		{"meshtls_proxy_tls_handshake_duration_seconds", map[string]string{"result": "ok"}, 1},
		{"meshtls_proxy_active_connections", map[string]string{"direction": "outbound"}, 3},
		{"meshtls_proxy_status_writes_total", nil, 2},
		{"go_goroutines", nil, -1},
		{"process_resident_memory_bytes", nil, -1},
	} {
		if got := get(c.name, c.labels); c.want >= 0 && got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	h := families["meshtls_proxy_tls_handshake_duration_seconds"].GetMetric()
	for _, s := range h {
		if matches(s, map[string]string{"result": "failed"}) {
			var below uint64 = 1
			for _, b := range s.GetHistogram().GetBucket() {
				if b.GetUpperBound() == 1.6384 {
					below = b.GetCumulativeCount()
				}
			}
			if below != 0 || s.GetHistogram().GetSampleSum() != 5 {
				t.Errorf("a 5s handshake belongs above the last bucket (1.6s): %v", s)
			}
		}
	}
	if got := m.Value("meshtls_proxy_connections_total", map[string]string{"direction": inbound}); got != 3 {
		t.Errorf("Value = %v, want 3", got)
	}
}
