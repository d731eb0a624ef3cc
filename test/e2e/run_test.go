// Package e2e drives the operator's user-facing entry points as processes on
// loopback: `make run` on a machine with no cluster, and (in later work) the proxy.
package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestMakeRunWithoutCluster runs hack/run.sh (what `make run` runs) with no kubeconfig
// at all, as on a fresh machine: it must start a local control plane with
// kube-controller-manager and cert-manager, print the KUBECONFIG line, and run the
// manager as its own ServiceAccount with its admission webhooks served to that control
// plane. Then it walks through docs/local-cluster.md with the kubectl it built: a
// Deployment in a meshed namespace gets injected pods and their PodProxyConfigs, the
// webhooks refuse an ambiguous policy, cert-manager issues a SPIFFE certificate. Ctrl-C
// stops it all and leaves no process behind.
func TestMakeRunWithoutCluster(t *testing.T) {
	if _, err := testenv.AssetsDir(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	home := t.TempDir()
	probeAddr := freeAddr(t)
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "run.sh"),
		"--metrics-bind-address=0", "--health-probe-bind-address="+probeAddr)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = runEnv(t, home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "run.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stopped := false
	defer func() {
		if !stopped {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("make run output:\n%s", b)
		}
	}()

	kubeconfig := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if path, ok := strings.CutPrefix(line, "KUBECONFIG="); ok {
				kubeconfig <- path
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { exited <- cmd.Wait() }()

	var kubeconfigPath string
	select {
	case kubeconfigPath = <-kubeconfig:
	case err := <-exited:
		stopped = true
		t.Fatalf("make run exited before printing the KUBECONFIG line: %v", err)
	case <-ctx.Done():
		t.Fatal("make run did not print the KUBECONFIG line in time")
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
	if err != nil {
		t.Fatalf("the printed kubeconfig does not load: %v", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the manager serves its readiness probe", func(t *testing.T) {
		waitFor(t, ctx, time.Minute, func() error {
			resp, err := http.Get("http://" + probeAddr + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("readyz: %s", resp.Status)
			}
			return nil
		})
	})

	t.Run("the kubectl it built talks to the control plane", func(t *testing.T) {
		kubectl, _ := testenv.KubectlPath()
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfigPath, "get", "crd", "-o", "name").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl: %v\n%s", err, out)
		}
		for _, crd := range []string{"meshmtlspolicies.security.meshtls.io", "podproxyconfigs.security.meshtls.io", "certificates.cert-manager.io"} {
			if !strings.Contains(string(out), crd) {
				t.Errorf("CRD %s is not installed:\n%s", crd, out)
			}
		}
	})

	kubectl := func(t *testing.T, stdin string, args ...string) (string, error) {
		t.Helper()
		path, _ := testenv.KubectlPath()
		cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", kubeconfigPath}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	mustKubectl := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, err := kubectl(t, stdin, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	t.Run("a Deployment in a meshed namespace gets injected pods and their PodProxyConfigs", func(t *testing.T) {
		mustKubectl(t, "", "create", "namespace", "shop")
		mustKubectl(t, "", "label", "namespace", "shop", "meshtls.io/inject=enabled")
		mustKubectl(t, "", "create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "-n", "shop")
		var pods corev1.PodList
		waitFor(t, ctx, time.Minute, func() error {
			if err := c.List(ctx, &pods, client.InNamespace("shop")); err != nil {
				return err
			}
			if len(pods.Items) != 2 {
				return fmt.Errorf("%d pods", len(pods.Items))
			}
			return nil
		})
		for _, p := range pods.Items {
			var names []string
			for _, ic := range p.Spec.InitContainers {
				names = append(names, ic.Name)
			}
			if !slices.Contains(names, "meshtls-proxy") || !slices.Contains(names, "meshtls-init") {
				t.Errorf("pod %s was not injected: init containers %v", p.Name, names)
			}
			if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
				t.Errorf("pod %s: phase %s node %q; with no scheduler and no kubelet it stays Pending", p.Name, p.Status.Phase, p.Spec.NodeName)
			}
		}
		waitFor(t, ctx, time.Minute, func() error {
			for _, p := range pods.Items {
				ppc := &v1alpha1.PodProxyConfig{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: p.Name}, ppc); err != nil {
					return err
				}
				if ppc.Spec.PodUID != p.UID || ppc.Spec.Inbound.Mode == "" {
					return fmt.Errorf("PodProxyConfig %s: podUID %s (pod %s), mode %q", ppc.Name, ppc.Spec.PodUID, p.UID, ppc.Spec.Inbound.Mode)
				}
			}
			return nil
		})
		mustKubectl(t, "", "get", "pods", "-n", "shop")
		out := mustKubectl(t, "", "get", "podproxyconfigs", "-n", "shop")
		for _, p := range pods.Items {
			if !strings.Contains(out, p.Name) {
				t.Errorf("`kubectl get podproxyconfigs -n shop` does not list %s", p.Name)
			}
		}
	})

	t.Run("a workload policy changes the PodProxyConfigs; an ambiguous one is refused", func(t *testing.T) {
		policy := func(name string) string {
			return fmt.Sprintf(`apiVersion: security.meshtls.io/v1alpha1
kind: WorkloadMTLSPolicy
metadata: {name: %s, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mode: STRICT
`, name)
		}
		mustKubectl(t, policy("web-strict"), "apply", "-f", "-")
		waitFor(t, ctx, time.Minute, func() error {
			var list v1alpha1.PodProxyConfigList
			if err := c.List(ctx, &list, client.InNamespace("shop")); err != nil {
				return err
			}
			for _, ppc := range list.Items {
				if ppc.Spec.Inbound.Mode != v1alpha1.ModeStrict {
					return fmt.Errorf("PodProxyConfig %s: mode %s", ppc.Name, ppc.Spec.Inbound.Mode)
				}
			}
			return nil
		})
		out, err := kubectl(t, policy("web-again"), "apply", "-f", "-")
		if err == nil || !strings.Contains(out, `WorkloadMTLSPolicy "web-strict" in namespace shop has the same selector`) {
			t.Errorf("want the validating webhook to refuse a second policy with the same selector, naming web-strict; got %v:\n%s", err, out)
		}
	})

	t.Run("the PodProxyConfig guard is in force and lets the operator write", func(t *testing.T) {
		out, err := kubectl(t, `apiVersion: security.meshtls.io/v1alpha1
kind: PodProxyConfig
metadata: {name: forged, namespace: shop}
spec:
  podUID: 00000000-0000-0000-0000-000000000000
  inbound: {mode: DISABLE}
`, "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "only meshtls-operator writes PodProxyConfigs") {
			t.Errorf("want the guard to refuse the admin's PodProxyConfig, got %v:\n%s", err, out)
		}
	})

	t.Run("cert-manager issues a SPIFFE certificate from mesh-ca", func(t *testing.T) {
		const ns, spiffeID = "run-e2e", "spiffe://cluster.local/ns/run-e2e/sa/demo"
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		cert := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cert-manager.io/v1",
			"kind":       "Certificate",
			"metadata":   map[string]any{"name": "demo", "namespace": ns},
			"spec": map[string]any{
				"secretName": "demo-tls",
				"uris":       []any{spiffeID},
				"duration":   "1h",
				"usages":     []any{"server auth", "client auth", "digital signature"},
				"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
				"issuerRef":  map[string]any{"name": testenv.MeshCAIssuer, "kind": "ClusterIssuer", "group": "cert-manager.io"},
			},
		}}
		if err := c.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		secret := &corev1.Secret{}
		waitFor(t, ctx, 2*time.Minute, func() error {
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-tls"}, secret); err != nil {
				return err
			}
			if len(secret.Data["tls.crt"]) == 0 {
				return fmt.Errorf("secret has no tls.crt yet")
			}
			return nil
		})
		leaf := parseCert(t, secret.Data["tls.crt"])
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
			t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, spiffeID)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(secret.Data["ca.crt"]) {
			t.Fatalf("secret has no usable ca.crt")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("the leaf does not chain to the mesh root: %v", err)
		}
	})

	t.Run("Ctrl-C stops everything it started", func(t *testing.T) {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
			stopped = true
		case <-time.After(90 * time.Second):
			t.Fatal("make run did not stop within 90s of Ctrl-C")
		}
		if _, err := net.DialTimeout("tcp", strings.TrimPrefix(cfg.Host, "https://"), time.Second); err == nil {
			t.Errorf("kube-apiserver at %s still answers after Ctrl-C", cfg.Host)
		}
		// Every process make run started, however deep, inherited its HOME.
		if left := processesWithEnv("HOME=" + home); len(left) > 0 {
			t.Errorf("still running after make run exited:\n%s", strings.Join(left, "\n"))
		}
	})
}

// processesWithEnv lists the processes (pid and command line) whose environment holds
// the entry kv.
func processesWithEnv(kv string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil {
			continue
		}
		for _, e := range strings.Split(string(env), "\x00") {
			if e == kv {
				cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
				out = append(out, filepath.Base(p)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
				break
			}
		}
	}
	return out
}

// runEnv is the environment of a fresh user: no kubeconfig, an empty home, but the
// same Go caches and control-plane cache, so nothing is downloaded or rebuilt again.
func runEnv(t *testing.T, home string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, v+"="+strings.TrimSpace(string(out)))
	}
	return append(env, "HOME="+home, "MESHTLS_CACHE="+testenv.CacheDir(), "MESHTLS_RUN_DIR="+filepath.Join(home, "run"))
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

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("tls.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err = check(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("not done within %s: %v", timeout, err)
}
