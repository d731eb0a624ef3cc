package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

// TestProxyTransparentCaptureInNetworkNamespaces runs the real pair in a "pod"
// network namespace, as injection sets it up: the capture step (with the
// injector's arguments, NET_ADMIN only) and meshtls-proxy with its transparent
// listeners, as the proxy's user. A client in a second namespace reaches the
// application's real ports and the proxy enforces each port's mode; the
// application's outbound connections pass through, or get mTLS to a destination
// the proxy is told about (a second meshtls-proxy in the client namespace).
func TestProxyTransparentCaptureInNetworkNamespaces(t *testing.T) {
	for _, tool := range []string{"ip", "nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 util-linux): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces and programs nftables: needs root (CI runs as root)")
	}
	proxyUID := inject.DefaultConfig().ProxyUID
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if err := inject.Inject(pod, inject.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	step := pod.Spec.InitContainers[0]

	// Everything the proxy's user reads must be readable by it.
	bin := binDir(t)
	proxyBin := filepath.Join(bin, "meshtls-proxy")
	b, err := os.ReadFile(proxyBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(proxyBin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(bin, "e2e.test")
	copyExecutable(t, self)
	ca := testpki.MustCA("mesh")
	serverDir, clientDir, trustDir := filepath.Join(bin, "server"), filepath.Join(bin, "client"), filepath.Join(bin, "trust")
	if err := ca.MustIssue(e2eServerID).WriteCertDir(serverDir, ca); err != nil {
		t.Fatal(err)
	}
	if err := ca.MustIssue(e2eClientID).WriteCertDir(clientDir, ca); err != nil {
		t.Fatal(err)
	}
	if err := testpki.AtomicWrite(trustDir, map[string][]byte{"ca.crt": ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	clientLeaf := ca.MustIssue("spiffe://cluster.local/ns/other/sa/client")
	writeConfig := func(name, body string) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	podConfig := writeConfig("pod.yaml", fmt.Sprintf(`apiVersion: security.meshtls.io/v1alpha1
kind: PodProxyConfig
metadata: {name: web, namespace: shop}
spec:
  podUID: uid-1
  identity: %s
  certificateSecretName: meshtls-finance-tls
  configHash: sha256:netns
  inbound:
    mode: STRICT
    ports: [{port: 8081, mode: PERMISSIVE}, {port: 8082, mode: DISABLE}, {port: 8083, mode: DISABLE}]
`, e2eServerID))

	podNS, clientNS := makeNamespaces(t)
	out, err := inNS(podNS, nsOpts{caps: "-all,+net_admin"}, proxyBin, step.Args...).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not supported") {
			t.Skipf("this kernel cannot run nf_tables nat: %s", out)
		}
		t.Fatalf("capture step: %v\n%s", err, out)
	}

	// The pod: the application (server-first: it greets and closes) and the proxy.
	// 8083 is bound to localhost only: private to the pod, with or without the proxy.
	startHelper(t, podNS, nsOpts{uid: appUID}, self, "app", "PORTS=8080,8081,8082,127.0.0.1:8083")
	startNSProxy(t, podNS, nsOpts{uid: proxyUID}, proxyBin, "--config="+podConfig, "--cert-dir="+serverDir, "--trust-dir="+trustDir,
		"--handshake-timeout=1s", "--sniff-timeout=100ms",
		"--outbound-destination="+clientV4+":9443="+e2eServerID)
	// Outside the pod: a plain server, and a meshed one behind its own proxy.
	startHelper(t, clientNS, nsOpts{uid: appUID}, self, "app", "PORTS=9090")
	peerConfig := writeConfig("peer.yaml", strings.ReplaceAll(strings.ReplaceAll(string(mustRead(t, podConfig)), "sha256:netns", "sha256:peer"), "ports: [{port: 8081, mode: PERMISSIVE}, {port: 8082, mode: DISABLE}, {port: 8083, mode: DISABLE}]", "ports: []"))
	startNSProxy(t, clientNS, nsOpts{uid: proxyUID}, proxyBin, "--config="+peerConfig, "--cert-dir="+serverDir, "--trust-dir="+trustDir,
		"--inbound-capture-addr=", "--outbound-capture-addr=", "--inbound-listen=:9443=9090")

	mtls := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{clientLeaf.TLS}}
	for _, tc := range []struct {
		name   string
		dst    string
		tls    bool
		greets string // "" : refused
	}{
		// The proxy connects to the address the client dialled, from it: the
		// application sees the pod's own address, never a loopback one.
		{"STRICT port, mTLS client", podV4 + ":8080", true, "app 8080 peer " + podV4 + ":"},
		{"STRICT port, IPv6 mTLS client", "[" + podV6 + "]:8080", true, "app 8080 peer [" + podV6 + "]:"},
		{"STRICT port, plaintext client", podV4 + ":8080", false, ""},
		{"PERMISSIVE port, mTLS client", podV4 + ":8081", true, "app 8081 peer " + podV4 + ":"},
		{"PERMISSIVE port, server-first plaintext client", podV4 + ":8081", false, "app 8081 peer " + podV4 + ":"},
		{"DISABLE port, plaintext client", podV4 + ":8082", false, "app 8082 peer " + podV4 + ":"},
		{"DISABLE port, IPv6 plaintext client", "[" + podV6 + "]:8082", false, "app 8082 peer [" + podV6 + "]:"},
		{"a port bound to localhost only stays private", podV4 + ":8083", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialInNS(clientNS, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.tls {
				tc := tls.Client(c, mtls)
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			got, _ := bufio.NewReader(c).ReadString('\n')
			if tc.greets == "" && got != "" || !strings.HasPrefix(got, tc.greets) {
				t.Fatalf("received %q, want %q", got, tc.greets)
			}
		})
	}
	t.Run("the application's outbound connection to an unknown destination passes through", func(t *testing.T) {
		got := dial(t, podNS, appUID, self, clientV4+":9090")
		if len(got) != 1 || !strings.HasPrefix(got[0], "app 9090 peer "+podV4+":") {
			t.Fatalf("received %q", got)
		}
	})
	t.Run("the application's outbound connection to a meshed destination gets mTLS", func(t *testing.T) {
		// The peer proxy is STRICT: only the pod proxy's mTLS gets the greeting, and
		// it comes through the peer proxy (peer 127.0.0.1).
		got := dial(t, podNS, appUID, self, clientV4+":9443")
		if len(got) != 1 || !strings.HasPrefix(got[0], "app 9090 peer 127.0.0.1:") {
			t.Fatalf("received %q", got)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startNSProxy runs meshtls-proxy in a network namespace until the test ends and
// waits for its /readyz on 127.0.0.1:15021 there.
func startNSProxy(t *testing.T, ns string, o nsOpts, bin string, args ...string) {
	t.Helper()
	cmd := inNS(ns, o, bin, append([]string{"proxy", "--log-level=debug"}, args...)...)
	logPath := filepath.Join(t.TempDir(), "proxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			t.Logf("meshtls-proxy in %s:\n%s", ns, tail(string(mustRead(t, logPath)), 40))
		}
	})
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
		return dialInNS(ns, addr)
	}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://127.0.0.1:15021/readyz")
		last := fmt.Sprint(err)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status + ": " + string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshtls-proxy in %s not ready within 10s: %s\n%s", ns, last, mustRead(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialInNS connects from inside a network namespace: the socket is made on a
// thread moved into the namespace (and discarded afterwards), and works from any
// goroutine once made.
func dialInNS(ns, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the runtime ends this thread with the goroutine, so no
		// other goroutine runs in the namespace.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
