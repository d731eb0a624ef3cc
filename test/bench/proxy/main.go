// Command proxy benchmarks meshtls-proxy on loopback and prints every figure beside
// its reference and its target, in one run:
//
//   - new mTLS connections per second through the server proxy, against a bare
//     crypto/tls server doing the same handshake and against ghostunnel v1.8.4 with
//     --allow-uri;
//   - bulk throughput through a client proxy and a server proxy, against a direct
//     crypto/tls connection, plain TCP and a ghostunnel client + server pair;
//   - latency added per small request/response on a kept-alive connection through
//     both proxies (p50, p99);
//   - PERMISSIVE against STRICT connection setup for TLS clients, and against
//     DISABLE for plaintext clients;
//   - the proxy's RSS with 100 busy and with 1,000 idle connections;
//   - with the local control plane: the time from a PodProxyConfig update to new
//     connections seeing it, without dropping an open connection; the same with
//     1,000 of the proxy's config clients watching their own PodProxyConfigs in one
//     process, and the API server's CPU; API status writes per proxy per hour.
//
// ghostunnel is built once, in a throwaway module under the meshtls cache
// (~/.cache/meshtls/ghostunnel-v1.8.4), never in this repository. Everything runs
// on loopback, on the machine's cores, client included.
//
//	go run ./test/bench/proxy [-duration 3s] [-rounds 3] [-no-ghostunnel] [-no-api] [-watchers 1000]
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	serverID = "spiffe://cluster.local/ns/bench/sa/server"
	clientID = "spiffe://cluster.local/ns/bench/sa/client"
)

var (
	duration   = flag.Duration("duration", 3*time.Second, "length of each measurement")
	rounds     = flag.Int("rounds", 3, "rounds of each comparison (the median is printed)")
	workers    = flag.Int("clients", 16, "concurrent clients for connection-rate measurements")
	noGhost    = flag.Bool("no-ghostunnel", false, "skip the ghostunnel references")
	noAPI      = flag.Bool("no-api", false, "skip the measurements that need the local control plane")
	watchers   = flag.Int("watchers", 1000, "config clients in one process for the scaled propagation measurement")
	changes    = flag.Int("changes", 50, "PodProxyConfig changes per propagation measurement")
	bulk       = flag.Int64("bulk-mib", 512, "MiB sent per bulk-throughput measurement")
	only       = flag.String("only", "", "run only these measurements (comma-separated: connrate, bulk, modes, memory, api)")
	proxyArgs  = flag.String("proxy-args", "", "extra arguments for every meshtls-proxy (space-separated), for experiments")
	pprofDir   = flag.String("pprof", "", "directory for CPU profiles of the proxies during each measurement (off when empty)")
	ghostCache = flag.String("ghostunnel", "", "ghostunnel binary (default: built into the meshtls cache)")
)

type bench struct {
	dir      string
	proxyBin string
	ghostBin string
	pki      struct {
		ca                    *testpki.CA
		server, client        *testpki.Leaf
		serverCert, serverKey string
		clientCert, clientKey string
		caFile                string
		serverDir, clientDir  string
		trustDir              string
	}
	procs []*process
}

func main() {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	b := &bench{}
	code := 0
	if err := b.run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchmark failed:", err)
		code = 1
	}
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop()
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
	os.Exit(code)
}

func (b *bench) run() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "meshtls-proxy-bench-"); err != nil {
		return err
	}
	if err := b.setupPKI(); err != nil {
		return err
	}
	fmt.Printf("meshtls-proxy benchmark: %d CPUs, loopback, %s per measurement, median of %d rounds; load average %s\n", numCPU(), *duration, *rounds, loadavg())
	fmt.Println("Rates are wall-clock on this machine, client included; \"CPU\" is the CPU time of every process of the run (clients, servers, proxies,")
	fmt.Println("applications) per unit of work, which other load on the machine does not change: compare those when the load average is high.")
	b.proxyBin = filepath.Join(b.dir, "meshtls-proxy")
	build := exec.Command("go", "build", "-o", b.proxyBin, "./cmd/proxy")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/proxy: %v\n%s", err, out)
	}
	if !*noGhost {
		if b.ghostBin, err = ghostunnel(*ghostCache); err != nil {
			return err
		}
	}
	for _, m := range []struct {
		name string
		run  func() error
	}{
		{"connrate", b.connectionRate}, {"bulk", b.bulkAndLatency}, {"modes", b.modes}, {"memory", b.memory}, {"api", b.policyPropagation},
	} {
		if *only != "" && !strings.Contains(","+*only+",", ","+m.name+",") || m.name == "api" && *noAPI {
			continue
		}
		if err := m.run(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) setupPKI() error {
	p := &b.pki
	p.ca = testpki.MustCA("bench mesh")
	// An IP SAN too: ghostunnel's client checks the address it dials.
	p.server = p.ca.MustIssue(serverID, testpki.WithIPAddresses(net.IPv4(127, 0, 0, 1)))
	p.client = p.ca.MustIssue(clientID)
	p.serverDir, p.clientDir, p.trustDir = filepath.Join(b.dir, "server"), filepath.Join(b.dir, "client"), filepath.Join(b.dir, "trust")
	for _, d := range []struct {
		leaf *testpki.Leaf
		dir  string
	}{{p.server, p.serverDir}, {p.client, p.clientDir}} {
		if err := d.leaf.WriteCertDir(d.dir, p.ca); err != nil {
			return err
		}
	}
	if err := testpki.AtomicWrite(p.trustDir, map[string][]byte{"ca.crt": p.ca.CertPEM}); err != nil {
		return err
	}
	p.serverCert, p.serverKey = filepath.Join(p.serverDir, "tls.crt"), filepath.Join(p.serverDir, "tls.key")
	p.clientCert, p.clientKey = filepath.Join(p.clientDir, "tls.crt"), filepath.Join(p.clientDir, "tls.key")
	p.caFile = filepath.Join(p.trustDir, "ca.crt")
	return nil
}

// ---- processes ----------------------------------------------------------------

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// helper starts this program in a helper role and waits for "ready".
func (b *bench) helper(role string, env ...string) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	return b.start(role, cmd, func(stdout *bufio.Scanner) error {
		if stdout.Scan() && stdout.Text() == "ready" {
			return nil
		}
		return fmt.Errorf("helper %s did not start", role)
	})
}

func (b *bench) start(name string, cmd *exec.Cmd, ready func(*bufio.Scanner) error) (*process, error) {
	logf, err := os.Create(filepath.Join(b.dir, fmt.Sprintf("%s-%d.log", strings.ReplaceAll(name, " ", "-"), len(b.procs))))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, name: name}
	b.procs = append(b.procs, p)
	sc := bufio.NewScanner(stdout)
	if ready != nil {
		if err := ready(sc); err != nil {
			return nil, fmt.Errorf("%w (log %s)", err, logf.Name())
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return p, nil
}

// proxy starts meshtls-proxy with a mode file and args, and waits for /readyz.
func (b *bench) proxy(name, certDir, mode string, args ...string) (*process, error) {
	health := freePort()
	cfg := filepath.Join(b.dir, name+"-ppc.yaml")
	if err := os.WriteFile(cfg, []byte(mode), 0o600); err != nil {
		return nil, err
	}
	all := append([]string{"proxy", "--config=" + cfg, "--inbound-capture-addr=", "--outbound-capture-addr=", "--metrics-addr=",
		"--health-addr=" + health, "--cert-dir=" + certDir, "--trust-dir=" + b.pki.trustDir, "--log-level=warn"}, args...)
	all = append(all, strings.Fields(*proxyArgs)...)
	pprofAddr := ""
	if *pprofDir != "" {
		pprofAddr = freePort()
		all = append(all, "--pprof-addr="+pprofAddr)
	}
	p, err := b.start(name, exec.Command(b.proxyBin, all...), nil)
	if err != nil {
		return nil, err
	}
	p.pprof = pprofAddr
	return p, waitHTTP("http://"+health+"/readyz", 10*time.Second)
}

// ppcYAML is a PodProxyConfig for --config: a default mode and port exceptions.
func ppcYAML(mode string, ports map[string]string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "apiVersion: security.meshtls.io/v1alpha1\nkind: PodProxyConfig\nmetadata: {name: bench, namespace: bench}\nspec:\n  podUID: bench\n  identity: %s\n  certificateSecretName: meshtls-server-tls\n  configHash: sha256:bench\n  inbound:\n    mode: %s\n", serverID, mode)
	if len(ports) > 0 {
		s.WriteString("    ports:\n")
		for p, m := range ports {
			fmt.Fprintf(&s, "    - {port: %s, mode: %s}\n", p, m)
		}
	}
	return s.String()
}

func execProxy(bin string, args ...string) *exec.Cmd {
	return exec.Command(bin, append([]string{"proxy"}, args...)...)
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %s", url, timeout, last)
}

func waitTCP(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("%s does not accept connections", addr)
}

// ---- clients ------------------------------------------------------------------

// clientTLS is the benchmark's mTLS client: the client certificate, TLS 1.3, Go's
// default key-exchange preferences (which offer X25519MLKEM768 and X25519), full
// handshakes (no session resumption). It does not verify the server: the figures
// are the server side's.
func (b *bench) clientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.pki.client.TLS}, InsecureSkipVerify: true}
}

type dialer func() (net.Conn, error)

func plainDialer(addr string) dialer {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
}

func tlsDialer(addr string, cfg *tls.Config) dialer {
	return func() (net.Conn, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		return d.Dial("tcp", addr)
	}
}

// connRate is new connections per second, each with one 1-byte round trip, from
// the given number of concurrent clients.
func connRate(dial dialer, clients int, d time.Duration) (float64, error) {
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{'x'}
			for time.Now().Before(stop) {
				c, err := dial()
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.Close()
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d of %d connections failed, first: %v", f, f+ok.Load(), firstErr.Load())
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), nil
}

// throughput sends -bulk bytes on one connection to a sink and returns bytes per
// second, from the first byte to the sink's acknowledgement of the last.
func throughput(dial dialer) (float64, error) {
	c, err := dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	total := *bulk << 20
	buf := make([]byte, 64<<10)
	start := time.Now()
	binary.BigEndian.PutUint64(buf[:8], uint64(total))
	if _, err := c.Write(buf[:8]); err != nil {
		return 0, err
	}
	for sent := int64(0); sent < total; {
		n := min(int64(len(buf)), total-sent)
		if _, err := c.Write(buf[:n]); err != nil {
			return 0, err
		}
		sent += n
	}
	var ack [8]byte
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("reading the sink's count: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != total {
		return 0, fmt.Errorf("the sink counted %d bytes of %d", got, total)
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.CloseWrite()
	}
	return c.(*net.TCPConn).CloseWrite()
}

// latencies returns the round-trip times of n 64-byte messages on one kept-alive
// connection, after a warm-up.
func latencies(dial dialer, n int) ([]time.Duration, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+1000; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return nil, err
		}
		if i >= 1000 {
			out = append(out, time.Since(start))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// median runs fn rounds times and returns the median result.
func median(fn func() (float64, error)) (float64, error) {
	var rs []float64
	for i := 0; i < *rounds; i++ {
		r, err := fn()
		if err != nil {
			return 0, err
		}
		rs = append(rs, r)
	}
	sort.Float64s(rs)
	return rs[len(rs)/2], nil
}

// ---- output -------------------------------------------------------------------

func section(title string) { fmt.Printf("\n%s\n", title) }

func row(name, value, note string) { fmt.Printf("  %-44s %16s   %s\n", name, value, note) }

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

func perSec(v float64) string { return fmt.Sprintf("%s/s", group(int64(v+0.5))) }

func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func mibps(v float64) string { return fmt.Sprintf("%.0f MiB/s", v/(1<<20)) }

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return max(1, strings.Count(string(b), "processor\t:"))
}

// cpuOf is the CPU time (user + system) a process has used, from /proc.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is 0, utime 11, stime 12 (in clock ticks, 100/s).
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// cpu is the CPU time used by the benchmark itself (the clients) and every process
// it started: measured over a window, it is the whole cost of what ran in it.
func (b *bench) cpu() time.Duration { return cpuOf(os.Getpid()) + b.cpuServers() }

// cpuServers is the CPU time of the processes the benchmark started (servers,
// proxies, applications): all but the clients.
func (b *bench) cpuServers() time.Duration {
	var t time.Duration
	for _, p := range b.procs {
		if p.cmd.ProcessState == nil {
			t += cpuOf(p.pid())
		}
	}
	return t
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

// profile records a CPU profile of the proxies for d, in the background, when
// -pprof is set.
func profile(what string, d time.Duration, procs ...*process) {
	if *pprofDir == "" {
		return
	}
	_ = os.MkdirAll(*pprofDir, 0o755)
	for _, p := range procs {
		if p == nil || p.pprof == "" {
			continue
		}
		for _, kind := range []string{"profile", "allocs"} {
			go func() {
				url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", p.pprof, kind, int(d.Seconds()))
				resp, err := http.Get(url)
				if err != nil {
					return
				}
				f, err := os.Create(filepath.Join(*pprofDir, what+"-"+p.name+"-"+kind+".pprof"))
				if err == nil {
					_, _ = io.Copy(f, resp.Body)
					f.Close()
				}
				resp.Body.Close()
			}()
		}
	}
}
