package proxy

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// Metrics are the proxy's Prometheus metrics, served in the text exposition
// format. The sidecar writes its own (a few counters, a gauge, a histogram)
// rather than link client_golang: it saves about 3 MiB of resident memory in every
// pod, and the data path's cost stays an atomic add.
type Metrics struct {
	connections *family
	received    *family
	sent        *family
	handshake   *family
	active      *family
	reloads     *family
	families    []*family
	start       time.Time

	// ports are the port label values in use: at most MaxPortLabels, so that no
	// client can make a series per port it connects to.
	portsMu sync.RWMutex
	ports   map[string]struct{}
}

// OtherPort is the port label of a port the proxy was not told about (not in the
// PodProxyConfig's inbound.ports, not an explicit listener, not a configured
// outbound destination), and of every port beyond MaxPortLabels.
const OtherPort = "other"

// MaxPortLabels caps the distinct port label values (besides "other").
const MaxPortLabels = 256

// NewMetrics makes the proxy's metrics.
func NewMetrics() *Metrics {
	m := &Metrics{start: time.Now(), ports: map[string]struct{}{}}
	m.connections = m.counter("meshtls_proxy_connections_total",
		"Connections by direction (inbound, outbound), application or destination port, mode and result.", "direction", "port", "mode", "result")
	m.received = m.counter("meshtls_proxy_received_bytes_total",
		"Bytes received from the downstream client (inbound: the remote peer; outbound: the application), by direction and port.", "direction", "port")
	m.sent = m.counter("meshtls_proxy_sent_bytes_total", "Bytes sent to the downstream client, by direction and port.", "direction", "port")
	m.handshake = m.add(&family{name: "meshtls_proxy_tls_handshake_duration_seconds", kind: "histogram",
		help: "Duration of TLS handshakes, by direction and result (ok, failed).", labels: []string{"direction", "result"},
		buckets: exponential(0.0001, 2, 15)}) // 100µs .. 1.6s
	m.active = m.add(&family{name: "meshtls_proxy_active_connections", kind: "gauge", help: "Connections open now, by direction.", labels: []string{"direction"}})
	m.reloads = m.counter("meshtls_proxy_reloads_total", "Applied changes, by what changed (config, certificate).", "what")
	return m
}

// Counter registers an unlabelled counter (for the command's own figures).
func (m *Metrics) Counter(name, help string) *atomic.Uint64 {
	return &m.counter(name, help).with().count
}

func (m *Metrics) counter(name, help string, labels ...string) *family {
	return m.add(&family{name: name, kind: "counter", help: help, labels: labels})
}

func (m *Metrics) add(f *family) *family {
	f.series = map[string]*series{}
	m.families = append(m.families, f)
	return f
}

func exponential(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

// family is one metric name with its series.
type family struct {
	name, kind, help string
	labels           []string
	buckets          []float64

	mu     sync.RWMutex
	series map[string]*series
}

// series is one label set: a counter or gauge (count, gauge), or a histogram.
type series struct {
	values  []string
	count   atomic.Uint64
	gauge   atomic.Int64
	buckets []atomic.Uint64
	sumBits atomic.Uint64
}

func (f *family) with(values ...string) *series {
	key := strings.Join(values, "\x00")
	f.mu.RLock()
	s := f.series[key]
	f.mu.RUnlock()
	if s != nil {
		return s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s = f.series[key]; s == nil {
		s = &series{values: append([]string(nil), values...)}
		if f.kind == "histogram" {
			s.buckets = make([]atomic.Uint64, len(f.buckets))
		}
		f.series[key] = s
	}
	return s
}

func (s *series) observe(bounds []float64, v float64) {
	for i, b := range bounds {
		if v <= b {
			s.buckets[i].Add(1)
			break
		}
	}
	s.count.Add(1)
	for {
		old := s.sumBits.Load()
		if s.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Counter is a handle on one counter series, for the data path.
type Counter struct{ s *series }

// Add adds n.
func (c Counter) Add(n int) {
	if c.s != nil && n > 0 {
		c.s.count.Add(uint64(n))
	}
}

// portLabel is the port label of a connection: the port when the proxy knows it
// (and the cap is not reached), else OtherPort.
func (m *Metrics) portLabel(port int, known bool) string {
	if !known {
		return OtherPort
	}
	p := strconv.Itoa(port)
	m.portsMu.RLock()
	_, ok := m.ports[p]
	m.portsMu.RUnlock()
	if ok {
		return p
	}
	m.portsMu.Lock()
	defer m.portsMu.Unlock()
	if _, ok := m.ports[p]; !ok {
		if len(m.ports) >= MaxPortLabels {
			return OtherPort
		}
		m.ports[p] = struct{}{}
	}
	return p
}

// connection counts one connection; port is a label from portLabel.
func (m *Metrics) connection(direction, port string, mode Mode, result string) {
	m.connections.with(direction, port, string(mode), result).count.Add(1)
}

func (m *Metrics) handshakeDone(direction string, seconds float64, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.handshake.with(direction, result).observe(m.handshake.buckets, seconds)
}

func (m *Metrics) activeAdd(direction string, d int64) { m.active.with(direction).gauge.Add(d) }

func (m *Metrics) reload(what string) { m.reloads.with(what).count.Add(1) }

// byteCounters returns the received and sent counters of one connection.
func (m *Metrics) byteCounters(direction, port string) (received, sent Counter) {
	return Counter{m.received.with(direction, port)}, Counter{m.sent.with(direction, port)}
}

// Value sums the series of a metric whose labels include want (tests, and the
// benchmark). For a histogram it is the number of observations.
func (m *Metrics) Value(name string, want map[string]string) float64 {
	var sum float64
	for _, f := range m.families {
		if f.name != name {
			continue
		}
		f.mu.RLock()
		for _, s := range f.series {
			ok := true
			for i, l := range f.labels {
				if v, set := want[l]; set && v != s.values[i] {
					ok = false
				}
			}
			if ok {
				if f.kind == "gauge" {
					sum += float64(s.gauge.Load())
				} else {
					sum += float64(s.count.Load())
				}
			}
		}
		f.mu.RUnlock()
	}
	return sum
}

// ServeHTTP writes the metrics in the Prometheus text format (version 0.0.4).
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	m.write(bw)
	_ = bw.Flush()
}

func (m *Metrics) write(w io.Writer) {
	for _, f := range m.families {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.kind)
		f.mu.RLock()
		keys := make([]string, 0, len(f.series))
		for k := range f.series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s := f.series[k]
			switch f.kind {
			case "counter":
				fmt.Fprintf(w, "%s%s %d\n", f.name, labelString(f.labels, s.values, ""), s.count.Load())
			case "gauge":
				fmt.Fprintf(w, "%s%s %d\n", f.name, labelString(f.labels, s.values, ""), s.gauge.Load())
			case "histogram":
				var cum uint64
				for i, b := range f.buckets {
					cum += s.buckets[i].Load()
					fmt.Fprintf(w, "%s_bucket%s %d\n", f.name, labelString(f.labels, s.values, strconv.FormatFloat(b, 'g', -1, 64)), cum)
				}
				n := s.count.Load()
				fmt.Fprintf(w, "%s_bucket%s %d\n", f.name, labelString(f.labels, s.values, "+Inf"), n)
				fmt.Fprintf(w, "%s_sum%s %s\n", f.name, labelString(f.labels, s.values, ""), strconv.FormatFloat(math.Float64frombits(s.sumBits.Load()), 'g', -1, 64))
				fmt.Fprintf(w, "%s_count%s %d\n", f.name, labelString(f.labels, s.values, ""), n)
			}
		}
		f.mu.RUnlock()
	}
	writeProcess(w, m.start)
}

func labelString(names, values []string, le string) string {
	if len(names) == 0 && le == "" {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(escape(values[i]))
		b.WriteByte('"')
	}
	if le != "" {
		if len(names) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`le="`)
		b.WriteString(le)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var escaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(s string) string { return escaper.Replace(s) }

// writeProcess writes the usual process and Go runtime gauges.
func writeProcess(w io.Writer, start time.Time) {
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", float64(ms.HeapAlloc))
	gauge("go_memstats_sys_bytes", "Number of bytes obtained from the system.", float64(ms.Sys))
	gauge("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", float64(ms.HeapInuse))
	gauge("go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", float64(ms.HeapIdle))
	gauge("go_memstats_heap_released_bytes", "Number of heap bytes released to the OS.", float64(ms.HeapReleased))
	gauge("go_memstats_stack_inuse_bytes", "Number of bytes in use by the stack allocator.", float64(ms.StackInuse))
	gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", float64(start.Unix()))
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseFloat(f[1], 64)
			gauge("process_resident_memory_bytes", "Resident memory size in bytes.", pages*float64(os.Getpagesize()))
		}
	}
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			if f := strings.Fields(s[i+2:]); len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				fmt.Fprintf(w, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %s\n",
					strconv.FormatFloat((u+st)/100, 'g', -1, 64))
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
}
