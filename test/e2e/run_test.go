// Package e2e drives the operator's user-facing entry points as processes on
// loopback: `make run` on a machine with no cluster, and (in later work) the proxy.
package e2e

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
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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
// webhooks refuse an ambiguous policy, and with a MeshMTLSPolicy naming mesh-ca the
// operator gets a pod its SPIFFE certificate from cert-manager and distributes the
// trust bundle it chains to. Ctrl-C stops it all and leaves no process behind.
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

	t.Run("the operator gets a pod its SPIFFE identity from mesh-ca", func(t *testing.T) {
		const ns, spiffeID = "run-e2e", "spiffe://cluster.local/ns/run-e2e/sa/demo"
		mustKubectl(t, `apiVersion: security.meshtls.io/v1alpha1
kind: MeshMTLSPolicy
metadata: {name: default}
spec:
  issuerRef: {name: mesh-ca, kind: ClusterIssuer, group: cert-manager.io}
`, "apply", "-f", "-")
		// The ServiceAccount admission plugin refuses a pod whose ServiceAccount does
		// not exist, so demo comes first.
		mustKubectl(t, `apiVersion: v1
kind: Namespace
metadata:
  name: run-e2e
  labels: {meshtls.io/inject: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: demo, namespace: run-e2e}
---
apiVersion: v1
kind: Pod
metadata: {name: demo, namespace: run-e2e, labels: {app: demo}}
spec:
  serviceAccountName: demo
  containers:
  - {name: app, image: nginx:1.27, ports: [{containerPort: 80}]}
`, "apply", "-f", "-")

		// The pod's PodProxyConfig names the identity and says when cert-manager has
		// issued it.
		ppc := &v1alpha1.PodProxyConfig{}
		waitFor(t, ctx, 2*time.Minute, func() error {
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo"}, ppc); err != nil {
				return err
			}
			if ppc.Spec.Certificate == nil {
				return fmt.Errorf("PodProxyConfig %s/demo has no spec.certificate", ns)
			}
			if !ppc.Spec.Certificate.Ready {
				return fmt.Errorf("PodProxyConfig %s/demo: certificate %s not ready (%s): %s", ns, ppc.Spec.Certificate.Name, ppc.Spec.Certificate.Reason, ppc.Spec.Certificate.Message)
			}
			return nil
		})
		if ppc.Spec.Identity != spiffeID || ppc.Spec.ServiceAccountName != "demo" ||
			ppc.Spec.Certificate.Name != "meshtls-demo" || ppc.Spec.CertificateSecretName != "meshtls-demo-tls" {
			t.Errorf("PodProxyConfig %s/demo: identity %q, serviceAccountName %q, certificate %q, secret %q; want %s, demo, meshtls-demo, meshtls-demo-tls",
				ns, ppc.Spec.Identity, ppc.Spec.ServiceAccountName, ppc.Spec.Certificate.Name, ppc.Spec.CertificateSecretName, spiffeID)
		}

		// The Certificate is the operator's, not one anybody else wrote.
		cert := &cmapi.Certificate{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-demo"}, cert); err != nil {
			t.Fatal(err)
		}
		if err := certificateReady(cert); err != nil {
			t.Error(err)
		}
		if cert.Labels["app.kubernetes.io/managed-by"] != "meshtls-operator" {
			t.Errorf("Certificate %s/meshtls-demo labels %v: want app.kubernetes.io/managed-by=meshtls-operator", ns, cert.Labels)
		}
		if cert.Spec.SecretName != "meshtls-demo-tls" || !slices.Equal(cert.Spec.URIs, []string{spiffeID}) || len(cert.Spec.DNSNames) != 0 ||
			cert.Spec.IssuerRef.Name != testenv.MeshCAIssuer || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
			t.Errorf("Certificate %s/meshtls-demo: secretName %q, uris %v, dnsNames %v, issuerRef %+v", ns, cert.Spec.SecretName, cert.Spec.URIs, cert.Spec.DNSNames, cert.Spec.IssuerRef)
		}
		mustKubectl(t, "", "get", "certificates", "-n", ns)

		// The mesh reports the issuer ready and the trust bundle in every meshed
		// namespace (shop's too).
		mesh := &v1alpha1.MeshMTLSPolicy{}
		waitFor(t, ctx, time.Minute, func() error {
			if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, mesh); err != nil {
				return err
			}
			for _, typ := range []string{v1alpha1.ConditionIssuerReady, v1alpha1.ConditionTrustBundleReady} {
				if err := conditionTrue(mesh.Status.Conditions, typ); err != nil {
					return fmt.Errorf("MeshMTLSPolicy default: %w", err)
				}
			}
			return nil
		})

		// The proxies of the namespace may read their PodProxyConfigs.
		rb := &rbacv1.RoleBinding{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-proxy"}, rb); err != nil {
			t.Errorf("RoleBinding %s/meshtls-proxy: %v", ns, err)
		} else if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != "meshtls-proxy" {
			t.Errorf("RoleBinding %s/meshtls-proxy binds %s %s, want ClusterRole meshtls-proxy", ns, rb.RoleRef.Kind, rb.RoleRef.Name)
		}

		// The leaf, as the pod's proxy reads it, verified against the namespace's trust
		// bundle as its peers do. (The operator never reads Secrets; the test is admin.)
		bundle := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-trust-bundle"}, bundle); err != nil {
			t.Fatal(err)
		}
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-demo-tls"}, secret); err != nil {
			t.Fatal(err)
		}
		if err := checkWorkloadLeaf(secret.Data["tls.crt"], []byte(bundle.Data["ca.crt"]), spiffeID); err != nil {
			t.Errorf("Secret %s/meshtls-demo-tls against ConfigMap %s/meshtls-trust-bundle: %v", ns, ns, err)
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
