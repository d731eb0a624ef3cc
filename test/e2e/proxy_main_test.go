package e2e

// The proxy's end-to-end tests drive the real meshtls-proxy binary as a process on
// loopback: against clients nobody here wrote (openssl, curl), against bad input,
// and against the real API server with a real pod-bound token. The binary and the
// control plane are made once per test binary, on first use, and stopped in
// TestMain.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var (
	proxyBuild struct {
		once sync.Once
		path string
		err  error
		dir  string
	}
	sharedEnv struct {
		once sync.Once
		env  *testenv.Env
		err  error
	}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedEnv.env != nil {
		_ = sharedEnv.env.Stop()
	}
	if proxyBuild.dir != "" {
		_ = os.RemoveAll(proxyBuild.dir)
	}
	os.Exit(code)
}

// proxyBinary builds cmd/proxy once.
func proxyBinary(t *testing.T) string {
	t.Helper()
	proxyBuild.once.Do(func() {
		proxyBuild.dir, proxyBuild.err = os.MkdirTemp("", "meshtls-proxy-e2e-")
		if proxyBuild.err != nil {
			return
		}
		proxyBuild.path = filepath.Join(proxyBuild.dir, "meshtls-proxy")
		cmd := exec.Command("go", "build", "-o", proxyBuild.path, "./cmd/proxy")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			proxyBuild.err = fmt.Errorf("go build ./cmd/proxy: %v\n%s", err, out)
		}
	})
	if proxyBuild.err != nil {
		t.Fatal(proxyBuild.err)
	}
	return proxyBuild.path
}

// controlPlane starts kube-apiserver, etcd, kube-controller-manager and
// cert-manager (with the mesh-ca ClusterIssuer ready) once for the package.
func controlPlane(t *testing.T) *testenv.Env {
	t.Helper()
	sharedEnv.once.Do(func() {
		if _, err := testenv.AssetsDir(); err != nil {
			sharedEnv.err = err
			return
		}
		sharedEnv.env, sharedEnv.err = testenv.Start(context.Background(), testenv.Options{CertManager: true, Progress: os.Stderr})
	})
	if sharedEnv.err != nil {
		t.Fatal(sharedEnv.err)
	}
	return sharedEnv.env
}

// proxyProc is a running meshtls-proxy.
type proxyProc struct {
	cmd     *exec.Cmd
	log     string
	health  string // host:port of /healthz, /readyz
	metrics string // host:port of /metrics
	exited  chan error
}

// startProxy runs `meshtls-proxy proxy` with the transparent listeners off, health
// and metrics on free loopback ports, and args; it waits for /healthz.
func startProxy(t *testing.T, args ...string) *proxyProc {
	t.Helper()
	return startProxyEnv(t, nil, args...)
}

// startProxyEnv is startProxy with environment variables (NAME=value) added.
func startProxyEnv(t *testing.T, env []string, args ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{health: freeAddr(t), metrics: freeAddr(t), exited: make(chan error, 1)}
	all := append([]string{"proxy", "--inbound-capture-addr=", "--outbound-capture-addr=",
		"--health-addr=" + p.health, "--metrics-addr=" + p.metrics, "--log-level=debug"}, args...)
	p.cmd = exec.Command(proxyBinary(t), all...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.log = filepath.Join(t.TempDir(), "proxy.log")
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("meshtls-proxy log:\n%s", tail(string(b), 60))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := p.get("/healthz"); code == 200 {
			return p
		}
		select {
		case err := <-p.exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("meshtls-proxy exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("meshtls-proxy did not serve /healthz within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the proxy to exit.
func (p *proxyProc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Error("meshtls-proxy did not exit within 15s of SIGTERM")
	}
}

func (p *proxyProc) get(path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.health + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the sum of the samples of a metric whose label set contains every
// label=value of match (e.g. `result="mtls"`).
func (p *proxyProc) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// rssKiB reads the proxy's resident set size.
func (p *proxyProc) rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// meshPKI is a CA with the server proxy's certificate and a good client's, laid
// out as the pod's volumes.
type meshPKI struct {
	ca                *testpki.CA
	server, client    *testpki.Leaf
	certDir, trustDir string
}

const (
	e2eServerID = "spiffe://cluster.local/ns/shop/sa/finance"
	e2eClientID = "spiffe://cluster.local/ns/shop/sa/frontend"
)

func newMeshPKI(t *testing.T, serverID string) *meshPKI {
	t.Helper()
	m := &meshPKI{ca: testpki.MustCA("mesh")}
	m.server = m.ca.MustIssue(serverID)
	m.client = m.ca.MustIssue(e2eClientID)
	dir := t.TempDir()
	m.certDir, m.trustDir = filepath.Join(dir, "certs"), filepath.Join(dir, "trust")
	if err := m.server.WriteCertDir(m.certDir, m.ca); err != nil {
		t.Fatal(err)
	}
	if err := testpki.AtomicWrite(m.trustDir, map[string][]byte{"ca.crt": m.ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	return m
}

// configFile writes a PodProxyConfig for --config.
func configFile(t *testing.T, mode string, ports map[int]string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: security.meshtls.io/v1alpha1\nkind: PodProxyConfig\nmetadata: {name: finance-0, namespace: shop}\nspec:\n  podUID: uid-1\n  identity: %s\n  certificateSecretName: meshtls-finance-tls\n  configHash: sha256:test\n  inbound:\n    mode: %s\n", e2eServerID, mode)
	if len(ports) > 0 {
		b.WriteString("    ports:\n")
		for p, m := range ports {
			fmt.Fprintf(&b, "    - {port: %d, mode: %s}\n", p, m)
		}
	}
	path := filepath.Join(t.TempDir(), "ppc.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// echoServer is the application: it answers what it reads, and half-closes after
// the client does.
func echoServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// httpServer is an HTTP application answering "hello from the app".
func httpApp(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello from the app\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// operatorUser is the operator's ServiceAccount, the only writer of PodProxyConfigs
// the guard lets through.
const operatorUser = "system:serviceaccount:meshtls-system:meshtls-operator"

// mustExist fails the test on err, unless the object already exists (the tests of
// this package share one control plane).
func mustExist(t *testing.T, err error) {
	t.Helper()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// bindOperator gives operatorUser cluster-admin, so that a test can act as the
// operator (by impersonation) with the guard in force.
func bindOperator(ctx context.Context, t *testing.T, admin client.Client) {
	t.Helper()
	mustExist(t, admin.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "e2e-proxy-operator"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: operatorUser}}}))
}
