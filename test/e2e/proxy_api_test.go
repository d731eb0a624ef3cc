package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestProxyFollowsItsPodProxyConfig runs meshtls-proxy against the real API server
// the way a pod runs it: in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT),
// a service-account token bound to its pod with the cluster CA beside it, the
// PodProxyConfig guard in force. The proxy fails closed before its PodProxyConfig
// exists, follows changes STRICT <-> PERMISSIVE without dropping open connections,
// and reports appliedHash, conditions and counters that match what the test sent,
// without writing while idle.
func TestProxyFollowsItsPodProxyConfig(t *testing.T) {
	env := controlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := env.Client
	must := func(err error) { t.Helper(); mustExist(t, err) }

	// The guard, and an operator identity it lets write PodProxyConfigs.
	must(env.ApplyFile(ctx, filepath.Join(testenv.RepoRoot(), "config", "guard", "podproxyconfig_guard.yaml")))
	bindOperator(ctx, t, admin)
	opCfg := rest.CopyConfig(env.Config)
	opCfg.Impersonate = rest.ImpersonationConfig{UserName: operatorUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	operator, err := client.New(opCfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}

	// The pod's namespace, service account, pod, and what the identity controllers
	// grant proxies (read PodProxyConfigs, patch their status).
	ns := "proxy-" + rand.String(5)
	must(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "finance"}}))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "finance-0"},
		Spec: corev1.PodSpec{ServiceAccountName: "finance", AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	must(admin.Create(ctx, pod))
	must(admin.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"podproxyconfigs"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"podproxyconfigs/status"}, Verbs: []string{"patch"}},
	}}))
	must(admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshtls-proxy"},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:serviceaccounts:" + ns}}}))

	// The projected token volume: a token bound to the pod, and the cluster CA.
	kube := kubernetes.NewForConfigOrDie(env.Config)
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "finance", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokenDir := t.TempDir()
	must(os.WriteFile(filepath.Join(tokenDir, "token"), []byte(tr.Status.Token), 0o600))
	must(os.WriteFile(filepath.Join(tokenDir, "ca.crt"), env.Config.CAData, 0o600))
	host, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}

	identity := "spiffe://cluster.local/ns/" + ns + "/sa/finance"
	pki := newMeshPKI(t, identity)
	app := echoServer(t)
	addr := freeAddr(t)
	p := startProxyEnv(t, []string{
		"KUBERNETES_SERVICE_HOST=" + host.Hostname(), "KUBERNETES_SERVICE_PORT=" + host.Port(),
		"MESHTLS_TOKEN_FILE=" + filepath.Join(tokenDir, "token"),
		"MESHTLS_CERT_DIR=" + pki.certDir, "MESHTLS_TRUST_DIR=" + pki.trustDir,
		"POD_NAME=" + pod.Name, "POD_NAMESPACE=" + ns, "POD_UID=" + string(pod.UID),
	}, "--inbound-listen="+addr+"="+strconv.Itoa(app), "--status-interval=1s", "--sniff-timeout=100ms")

	dialMTLS := func(cert *tls.Certificate) (net.Conn, error) {
		cfg := &tls.Config{InsecureSkipVerify: true}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return nil, err
		}
		return c, echoOnce(c, "mtls")
	}
	dialPlain := func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return nil, err
		}
		return c, echoOnce(c, "GET / HTTP/1.1\r\n")
	}
	var sent struct{ mtls, plaintext, rejected, failures int64 }

	t.Run("should refuse plaintext and not be ready before its PodProxyConfig exists", func(t *testing.T) {
		if code, body := p.get("/readyz"); code != 503 {
			t.Fatalf("readyz %d %s", code, body)
		}
		if c, err := dialPlain(); err == nil {
			c.Close()
			t.Fatal("plaintext passed without a PodProxyConfig")
		}
		sent.rejected++
	})

	ppc := &v1alpha1.PodProxyConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "meshtls-operator"}},
		Spec: v1alpha1.PodProxyConfigSpec{PodUID: pod.UID, ServiceAccountName: "finance", Identity: identity,
			CertificateSecretName: "meshtls-finance-tls", TrustBundleConfigMapName: "meshtls-trust-bundle",
			Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModePermissive}, ConfigHash: "sha256:permissive"},
	}
	// The guard type-checks asynchronously after it is created: retry the first write.
	waitFor(t, ctx, 30*time.Second, func() error { return operator.Create(ctx, ppc) })
	setMode := func(t *testing.T, mode v1alpha1.Mode, hash string) time.Duration {
		t.Helper()
		obj := &v1alpha1.PodProxyConfig{}
		must(operator.Get(ctx, client.ObjectKeyFromObject(ppc), obj))
		obj.Spec.Inbound.Mode, obj.Spec.ConfigHash = mode, hash
		start := time.Now()
		must(operator.Update(ctx, obj))
		waitStatus(t, ctx, admin, ppc, func(st *v1alpha1.PodProxyConfigStatus) error {
			if st.AppliedHash != hash {
				return fmt.Errorf("appliedHash %q", st.AppliedHash)
			}
			return nil
		})
		return time.Since(start)
	}

	t.Run("should apply it and report Applied and CertificateReady at once", func(t *testing.T) {
		waitStatus(t, ctx, admin, ppc, func(st *v1alpha1.PodProxyConfigStatus) error {
			if st.AppliedHash != "sha256:permissive" {
				return fmt.Errorf("appliedHash %q", st.AppliedHash)
			}
			for _, c := range []string{v1alpha1.ConditionApplied, v1alpha1.ConditionCertificateReady} {
				if !meta.IsStatusConditionTrue(st.Conditions, c) {
					return fmt.Errorf("%s not True: %+v", c, st.Conditions)
				}
			}
			return nil
		})
		waitReady(t, p)
	})

	var openMTLS, openPlain net.Conn
	t.Run("should accept mTLS and plaintext while PERMISSIVE", func(t *testing.T) {
		var err error
		if openMTLS, err = dialMTLS(&pki.client.TLS); err != nil {
			t.Fatal(err)
		}
		sent.mtls++
		if openPlain, err = dialPlain(); err != nil {
			t.Fatal(err)
		}
		sent.plaintext++
	})
	if openMTLS == nil || openPlain == nil {
		t.FailNow()
	}
	defer openMTLS.Close()
	defer openPlain.Close()

	t.Run("should refuse plaintext after the change to STRICT, keep mTLS, and keep open connections", func(t *testing.T) {
		took := setMode(t, v1alpha1.ModeStrict, "sha256:strict")
		t.Logf("STRICT applied and reported %v after the update", took.Round(time.Millisecond))
		if c, err := dialPlain(); err == nil {
			c.Close()
			t.Fatal("plaintext passed on STRICT")
		}
		sent.rejected++
		if _, err := dialMTLS(nil); err == nil {
			t.Fatal("a client without a certificate passed on STRICT")
		}
		sent.failures++
		c, err := dialMTLS(&pki.client.TLS)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sent.mtls++
		for name, c := range map[string]net.Conn{"mTLS": openMTLS, "plaintext": openPlain} {
			if err := echoOnce(c, "still open"); err != nil {
				t.Fatalf("the %s connection opened before the change was dropped: %v", name, err)
			}
		}
	})

	t.Run("should accept plaintext again after the change back to PERMISSIVE", func(t *testing.T) {
		setMode(t, v1alpha1.ModePermissive, "sha256:permissive-again")
		c, err := dialPlain()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sent.plaintext++
		if err := echoOnce(openMTLS, "still open"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("should report counters that match what was sent", func(t *testing.T) {
		want := v1alpha1.ConnectionCounts{MTLS: sent.mtls, Plaintext: sent.plaintext, RejectedPlaintext: sent.rejected, HandshakeFailures: sent.failures}
		waitStatus(t, ctx, admin, ppc, func(st *v1alpha1.PodProxyConfigStatus) error {
			if st.Connections == nil || *st.Connections != want {
				return fmt.Errorf("connections %+v, want %+v", st.Connections, want)
			}
			if st.LastPlaintextTime == nil || time.Since(st.LastPlaintextTime.Time) > time.Minute {
				return fmt.Errorf("lastPlaintextTime %v", st.LastPlaintextTime)
			}
			return nil
		})
	})

	t.Run("should write its status as meshtls-proxy, and nothing while idle", func(t *testing.T) {
		obj := &v1alpha1.PodProxyConfig{}
		must(admin.Get(ctx, client.ObjectKeyFromObject(ppc), obj))
		var manager bool
		for _, mf := range obj.ManagedFields {
			manager = manager || mf.Manager == "meshtls-proxy" && mf.Subresource == "status"
		}
		if !manager {
			t.Errorf("no status managed fields of meshtls-proxy: %+v", obj.ManagedFields)
		}
		before := p.metric(t, "meshtls_proxy_status_writes_total")
		time.Sleep(3500 * time.Millisecond) // three and a half status intervals
		if after := p.metric(t, "meshtls_proxy_status_writes_total"); after != before {
			t.Fatalf("%v status writes while idle", after-before)
		}
		t.Logf("%v status writes in all", before)
	})
}

// echoOnce writes msg and expects it back from the echo application.
func echoOnce(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
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

// waitStatus polls the PodProxyConfig's status until check passes.
func waitStatus(t *testing.T, ctx context.Context, c client.Client, obj *v1alpha1.PodProxyConfig, check func(*v1alpha1.PodProxyConfigStatus) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		cur := &v1alpha1.PodProxyConfig{}
		if err = c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err == nil {
			if err = check(&cur.Status); err == nil {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("status not as expected within 20s: %v", err)
}
