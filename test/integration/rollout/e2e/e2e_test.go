// Package e2e runs an MTLSRollout end to end with real meshtls-proxy processes on
// loopback: the local control plane with cert-manager's real controllers, the
// operator (its own RBAC, webhooks, the guard) issuing each workload its SPIFFE
// certificate, and two proxies, each with its pod's bound token, its issued
// certificate and its namespace's trust bundle, in front of a real echo application.
//
// A client without a sidecar keeps speaking plaintext to the namespace under
// rollout: the rollout refuses to promote it. Once that client goes through a meshed
// proxy, the rollout promotes the namespace and it ends STRICT, and no request from
// a meshed client failed on the way.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/operator"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const operatorNamespace = "meshtls-system"

var (
	env        *testenv.Env
	k8s        client.Client
	proxyBin   string
	managerErr error
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	level := zapcore.Level(2)
	if os.Getenv("MESHTLS_TEST_VERBOSE") != "" {
		level = -1
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir, err := os.MkdirTemp("", "meshtls-rollout-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	proxyBin = filepath.Join(dir, "meshtls-proxy")
	build := exec.Command("go", "build", "-o", proxyBin, "./cmd/proxy")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/proxy: %v\n%s", err, out)
		return 1
	}

	env, err = testenv.Start(ctx, testenv.Options{
		CertManager: true, Progress: os.Stderr,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")}},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client

	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, f := range []string{"config/rbac/service_account.yaml", "config/rbac/role.yaml", "config/rbac/role_binding.yaml",
		"config/rbac/proxy_role.yaml", "config/guard/podproxyconfig_guard.yaml"} {
		if err := env.ApplyFile(ctx, filepath.Join(testenv.RepoRoot(), f)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + operatorNamespace + ":meshtls-operator",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
	}
	host, port, certDir := env.WebhookServing()
	mgr, _, err := operator.New(cfg, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true, OperatorNamespace: operatorNamespace,
		Webhooks: true, WebhookHost: host, WebhookPort: port, WebhookCertDir: certDir, Inject: inject.DefaultConfig(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to build the manager: %v\n", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if err := env.WaitForInjection(ctx, 60*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
	}
	return code
}

func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// workload is a meshed pod whose sidecar runs here as a meshtls-proxy process.
type workload struct {
	namespace, pod, sa string
	dir                string // token/, certs/, trust/
}

// newWorkload creates a meshed namespace (if needed), a ServiceAccount and a pod (the
// real injector injects it), waits for its PodProxyConfig with a ready certificate,
// and lays out what the kubelet would mount: a token bound to the pod with the
// cluster CA, the issued certificate, and the trust bundle.
func newWorkload(t *testing.T, ns string, nsLabels map[string]string, sa, pod string) *workload {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"meshtls.io/inject": "enabled"}
	for k, v := range nsLabels {
		labels[k] = v
	}
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}))
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: map[string]string{"app": sa}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}
	eventually(t, 30*time.Second, "create pod "+pod, func() error {
		err := k8s.Create(ctx, p)
		if apierrors.IsAlreadyExists(err) {
			return k8s.Get(ctx, client.ObjectKeyFromObject(p), p)
		}
		return err
	})
	injected := false
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		injected = injected || c.Name == "meshtls-proxy"
	}
	if !injected {
		t.Fatalf("pod %s/%s was not injected", ns, pod)
	}

	w := &workload{namespace: ns, pod: pod, sa: sa, dir: t.TempDir()}
	for _, d := range []string{"token", "certs", "trust"} {
		must(t, os.MkdirAll(filepath.Join(w.dir, d), 0o700))
	}
	tr, err := kubernetes.NewForConfigOrDie(env.Config).CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(w.dir, "token", "token"), []byte(tr.Status.Token), 0o600))
	must(t, os.WriteFile(filepath.Join(w.dir, "token", "ca.crt"), env.Config.CAData, 0o600))

	ppc := &v1alpha1.PodProxyConfig{}
	eventually(t, 90*time.Second, "a ready certificate for "+ns+"/"+pod, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, ppc); err != nil {
			return err
		}
		if c := ppc.Spec.Certificate; c == nil || !c.Ready {
			return fmt.Errorf("certificate %+v", ppc.Spec.Certificate)
		}
		return nil
	})
	// What the kubelet mounts (the operator never reads Secrets; the test plays the
	// kubelet here).
	secret := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: ppc.Spec.CertificateSecretName}, secret))
	must(t, os.WriteFile(filepath.Join(w.dir, "certs", "tls.crt"), secret.Data["tls.crt"], 0o600))
	must(t, os.WriteFile(filepath.Join(w.dir, "certs", "tls.key"), secret.Data["tls.key"], 0o600))
	bundle := &corev1.ConfigMap{}
	eventually(t, 30*time.Second, "the trust bundle of "+ns, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: ppc.Spec.TrustBundleConfigMapName}, bundle); err != nil {
			return err
		}
		if bundle.Data["ca.crt"] == "" {
			return errors.New("empty")
		}
		return nil
	})
	must(t, os.WriteFile(filepath.Join(w.dir, "trust", "ca.crt"), []byte(bundle.Data["ca.crt"]), 0o600))
	return w
}

// startProxy runs the workload's meshtls-proxy with args, and waits until it reports
// its configuration applied with a certificate.
func (w *workload) startProxy(t *testing.T, args ...string) {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"proxy", "--inbound-capture-addr=", "--outbound-capture-addr=", "--health-addr=", "--metrics-addr=",
		"--status-interval=1s", "--sniff-timeout=100ms"}, args...)
	cmd := exec.Command(proxyBin, all...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"),
		"KUBERNETES_SERVICE_HOST=" + u.Hostname(), "KUBERNETES_SERVICE_PORT=" + u.Port(),
		"MESHTLS_TOKEN_FILE=" + filepath.Join(w.dir, "token", "token"),
		"MESHTLS_CERT_DIR=" + filepath.Join(w.dir, "certs"), "MESHTLS_TRUST_DIR=" + filepath.Join(w.dir, "trust"),
		"POD_NAME=" + w.pod, "POD_NAMESPACE=" + w.namespace}
	logPath := filepath.Join(w.dir, "proxy.log")
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
			b, _ := os.ReadFile(logPath)
			t.Logf("meshtls-proxy of %s/%s:\n%s", w.namespace, w.pod, tail(string(b), 40))
		}
	})
	eventually(t, 30*time.Second, "the proxy of "+w.namespace+"/"+w.pod+" applies its config", func() error {
		ppc := w.config(t)
		if ppc.Status.AppliedHash != ppc.Spec.ConfigHash || !meta.IsStatusConditionTrue(ppc.Status.Conditions, v1alpha1.ConditionCertificateReady) {
			return fmt.Errorf("status %+v", ppc.Status)
		}
		return nil
	})
}

func (w *workload) config(t *testing.T) *v1alpha1.PodProxyConfig {
	t.Helper()
	ppc := &v1alpha1.PodProxyConfig{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.namespace, Name: w.pod}, ppc); err != nil {
		t.Fatal(err)
	}
	return ppc
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// echoServer is the application: it echoes what it reads.
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
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// request opens a connection to addr, sends a line and expects it back.
func request(addr, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo %q, want %q", b, msg)
	}
	return nil
}

// client sends a request to its target every interval until stopped, counting.
type trafficClient struct {
	mu       sync.Mutex
	target   string
	ok, fail atomic.Int64
	lastErr  atomic.Value
	stop     chan struct{}
	done     chan struct{}
}

func startClient(target string, interval time.Duration) *trafficClient {
	c := &trafficClient{target: target, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for i := 0; ; i++ {
			c.mu.Lock()
			target := c.target
			c.mu.Unlock()
			if err := request(target, "request "+strconv.Itoa(i)+"\n"); err != nil {
				c.fail.Add(1)
				c.lastErr.Store(err.Error())
			} else {
				c.ok.Add(1)
			}
			select {
			case <-c.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return c
}

func (c *trafficClient) retarget(target string) {
	c.mu.Lock()
	c.target = target
	c.mu.Unlock()
}

func (c *trafficClient) halt() {
	close(c.stop)
	<-c.done
}

func TestRolloutWithRealProxies(t *testing.T) {
	ctx := context.Background()
	// The mesh, with the CA ClusterIssuer that testenv made ready.
	eventually(t, 30*time.Second, "create the MeshMTLSPolicy", func() error {
		err := k8s.Create(ctx, &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.MeshMTLSPolicySpec{
			Mode: v1alpha1.ModePermissive, IssuerRef: v1alpha1.IssuerReference{Name: testenv.MeshCAIssuer, Kind: "ClusterIssuer", Group: "cert-manager.io"}}})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})

	server := newWorkload(t, "e2e-shop", map[string]string{"rollout": "e2e"}, "web", "web-0")
	meshed := newWorkload(t, "e2e-client", nil, "client", "client-0")

	app := echoServer(t)
	serverAddr, clientAddr := freeAddr(t), freeAddr(t)
	server.startProxy(t, "--inbound-listen="+serverAddr+"="+strconv.Itoa(app))
	meshed.startProxy(t, "--outbound-listen="+clientAddr+"="+serverAddr,
		"--outbound-destination="+serverAddr+"=spiffe://cluster.local/ns/e2e-shop/sa/web")

	// A meshed client, through its proxy (mTLS to the server's proxy), and a client
	// without a sidecar speaking plaintext straight to the server's proxy.
	meshedClient := startClient(clientAddr, 100*time.Millisecond)
	plain := startClient(serverAddr, 300*time.Millisecond)
	eventually(t, 10*time.Second, "both clients get answers", func() error {
		if meshedClient.ok.Load() == 0 || plain.ok.Load() == 0 {
			return fmt.Errorf("meshed %d ok, plaintext %d ok", meshedClient.ok.Load(), plain.ok.Load())
		}
		return nil
	})

	// The plaintext client has been at it for a while: its proxy has reported it.
	// (A client that started within the proxy's report interval would be missed
	// here, and caught by the soak: its plaintext is refused, and the namespace is
	// rolled back.)
	eventually(t, 10*time.Second, "the server's proxy reports plaintext", func() error {
		if server.config(t).Status.LastPlaintextTime == nil {
			return errors.New("no lastPlaintextTime yet")
		}
		return nil
	})

	ro := &v1alpha1.MTLSRollout{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}, Spec: v1alpha1.MTLSRolloutSpec{
		TargetMode: v1alpha1.ModeStrict, NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"rollout": "e2e"}},
		MaxConcurrent: 1, SoakDuration: &metav1.Duration{Duration: 6 * time.Second}, PlaintextWindow: &metav1.Duration{Duration: 6 * time.Second},
		RollbackOnFailure: ptr.To(true)}}
	must(t, k8s.Create(ctx, ro))

	status := func() v1alpha1.NamespaceRolloutStatus {
		cur := &v1alpha1.MTLSRollout{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "e2e"}, cur); err != nil {
			t.Fatal(err)
		}
		for _, e := range cur.Status.Namespaces {
			if e.Name == "e2e-shop" {
				return e
			}
		}
		return v1alpha1.NamespaceRolloutStatus{}
	}

	t.Run("refuses to promote while a client without a sidecar speaks plaintext", func(t *testing.T) {
		eventually(t, 30*time.Second, "e2e-shop waits on plaintext", func() error {
			if e := status(); e.State != v1alpha1.NamespaceWaiting || !strings.Contains(e.Message, "plaintext seen") || !strings.Contains(e.Message, "on pod web-0") {
				return fmt.Errorf("%s: %s", e.State, e.Message)
			}
			return nil
		})
		time.Sleep(8 * time.Second) // longer than the window: the client keeps speaking
		if e := status(); e.State != v1alpha1.NamespaceWaiting {
			t.Fatalf("e2e-shop is %s (%s) while plaintext flows", e.State, e.Message)
		}
		if mode := server.config(t).Spec.Inbound.Mode; mode != v1alpha1.ModePermissive {
			t.Fatalf("the server is %s", mode)
		}
	})

	// The client gets a sidecar: its requests now go through the meshed proxy.
	plain.retarget(clientAddr)

	t.Run("promotes once the client is meshed, and ends STRICT", func(t *testing.T) {
		eventually(t, 90*time.Second, "the rollout succeeds", func() error {
			cur := &v1alpha1.MTLSRollout{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: "e2e"}, cur); err != nil {
				return err
			}
			if cur.Status.Phase != v1alpha1.RolloutSucceeded {
				return fmt.Errorf("phase %s, e2e-shop %+v", cur.Status.Phase, status())
			}
			return nil
		})
		ppc := server.config(t)
		if ppc.Spec.Inbound.Mode != v1alpha1.ModeStrict || ppc.Status.AppliedHash != ppc.Spec.ConfigHash {
			t.Fatalf("the server's proxy: mode %s, applied %t", ppc.Spec.Inbound.Mode, ppc.Status.AppliedHash == ppc.Spec.ConfigHash)
		}
	})

	meshedClient.halt()
	plain.halt()
	t.Run("no request from a meshed client failed", func(t *testing.T) {
		if n := meshedClient.fail.Load(); n > 0 {
			t.Errorf("%d of %d meshed requests failed, last: %v", n, n+meshedClient.ok.Load(), meshedClient.lastErr.Load())
		}
		t.Logf("meshed client: %d requests; the other client: %d ok, %d refused or failed while it spoke plaintext", meshedClient.ok.Load(), plain.ok.Load(), plain.fail.Load())
	})

	t.Run("plaintext is refused now", func(t *testing.T) {
		if err := request(serverAddr, "plaintext\n"); err == nil {
			t.Fatal("a plaintext request to the STRICT port got an answer")
		}
		if err := request(clientAddr, "meshed\n"); err != nil {
			t.Fatalf("a meshed request failed: %v", err)
		}
	})
}
