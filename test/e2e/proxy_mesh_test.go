package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestProxyMeshEndToEnd is the data plane with everything around it real: the local
// control plane, the manager (as the operator's identity, the PodProxyConfig guard
// in force), certificates issued by cert-manager through the operator, and two
// proxies as processes with their own pod-bound tokens: a client proxy that
// originates mTLS to an explicit destination, and a server proxy in front of an
// echo application. The test plays the kubelet: it writes each pod's Secret and
// trust-bundle ConfigMap to files as the volumes would hold them.
func TestProxyMeshEndToEnd(t *testing.T) {
	env := controlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := env.Client
	must := func(err error) { t.Helper(); mustExist(t, err) }
	root := testenv.RepoRoot()
	for _, f := range []string{"config/rbac/proxy_role.yaml", "config/guard/podproxyconfig_guard.yaml"} {
		must(env.ApplyFile(ctx, filepath.Join(root, f)))
	}

	// The manager, as the operator's service account (the guard lets only it write
	// PodProxyConfigs).
	bindOperator(ctx, t, admin)
	kc, err := clientcmd.LoadFromFile(env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range kc.AuthInfos {
		u.Impersonate = operatorUser
	}
	operatorKubeconfig := filepath.Join(t.TempDir(), "operator.kubeconfig")
	must(clientcmd.WriteToFile(*kc, operatorKubeconfig))
	managerBin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", managerBin, "./cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/manager: %v\n%s", err, out)
	}
	mgr := exec.Command(managerBin, "--kubeconfig="+operatorKubeconfig, "--enable-webhooks=false", "--metrics-bind-address=0",
		"--health-probe-bind-address="+freeAddr(t))
	mgrLog := filepath.Join(t.TempDir(), "manager.log")
	logf, err := os.Create(mgrLog)
	if err != nil {
		t.Fatal(err)
	}
	mgr.Stdout, mgr.Stderr = logf, logf
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mgr.Process.Signal(os.Interrupt)
		_ = mgr.Wait()
		logf.Close()
		if t.Failed() {
			t.Logf("manager log:\n%s", tail(readFile(t, mgrLog), 40))
		}
	})

	// The mesh: PERMISSIVE, certificates from the mesh-ca ClusterIssuer.
	must(admin.Create(ctx, &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.MeshMTLSPolicySpec{Mode: v1alpha1.ModePermissive, IssuerRef: v1alpha1.IssuerReference{Name: testenv.MeshCAIssuer, Kind: "ClusterIssuer"}}}))
	ns := "mesh-" + rand.String(5)
	must(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"meshtls.io/inject": "enabled"}}}))
	pods := map[string]*corev1.Pod{}
	for _, sa := range []string{"server", "client"} {
		must(admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa + "-0", Labels: map[string]string{"app": sa}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		must(admin.Create(ctx, p))
		pods[sa] = p
	}

	// What the kubelet would mount: the issued certificate, the trust bundle, and a
	// token bound to the pod with the cluster CA beside it.
	kube := kubernetes.NewForConfigOrDie(env.Config)
	host, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	volumes := func(sa string) []string {
		t.Helper()
		dir := t.TempDir()
		secret := &corev1.Secret{}
		waitFor(t, ctx, 2*time.Minute, func() error {
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-" + sa + "-tls"}, secret); err != nil {
				return err
			}
			if len(secret.Data["tls.crt"]) == 0 {
				return fmt.Errorf("secret %s has no certificate yet", secret.Name)
			}
			return nil
		})
		bundle := &corev1.ConfigMap{}
		waitFor(t, ctx, time.Minute, func() error {
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "meshtls-trust-bundle"}, bundle); err != nil {
				return err
			}
			if bundle.Data["ca.crt"] == "" {
				return fmt.Errorf("the trust bundle is empty")
			}
			return nil
		})
		certDir, trustDir, tokenDir := filepath.Join(dir, "certs"), filepath.Join(dir, "trust"), filepath.Join(dir, "token")
		must(testpki.AtomicWrite(certDir, map[string][]byte{"tls.crt": secret.Data["tls.crt"], "tls.key": secret.Data["tls.key"]}))
		must(testpki.AtomicWrite(trustDir, map[string][]byte{"ca.crt": []byte(bundle.Data["ca.crt"])}))
		tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pods[sa].Name, UID: pods[sa].UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		must(testpki.AtomicWrite(tokenDir, map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": env.Config.CAData}))
		return []string{"KUBERNETES_SERVICE_HOST=" + host.Hostname(), "KUBERNETES_SERVICE_PORT=" + host.Port(),
			"MESHTLS_TOKEN_FILE=" + filepath.Join(tokenDir, "token"), "MESHTLS_CERT_DIR=" + certDir, "MESHTLS_TRUST_DIR=" + trustDir,
			"POD_NAME=" + pods[sa].Name, "POD_NAMESPACE=" + ns, "POD_UID=" + string(pods[sa].UID)}
	}
	app := echoServer(t)
	serverAddr, clientAddr := freeAddr(t), freeAddr(t)
	serverID := "spiffe://cluster.local/ns/" + ns + "/sa/server"
	server := startProxyEnv(t, volumes("server"), "--inbound-listen="+serverAddr+"="+strconv.Itoa(app), "--status-interval=1s")
	clientProxy := startProxyEnv(t, volumes("client"), "--outbound-listen="+clientAddr+"="+serverAddr, "--outbound-destination="+serverAddr+"="+serverID, "--status-interval=1s")
	waitReady(t, server)
	waitReady(t, clientProxy)

	serverPPC := &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-0"}}
	applied := func(t *testing.T, mode v1alpha1.Mode) {
		t.Helper()
		waitFor(t, ctx, time.Minute, func() error {
			cur := &v1alpha1.PodProxyConfig{}
			if err := admin.Get(ctx, client.ObjectKeyFromObject(serverPPC), cur); err != nil {
				return err
			}
			switch {
			case cur.Spec.Inbound.Mode != mode:
				return fmt.Errorf("spec.inbound.mode %s", cur.Spec.Inbound.Mode)
			case cur.Status.AppliedHash != cur.Spec.ConfigHash:
				return fmt.Errorf("appliedHash %q, configHash %q", cur.Status.AppliedHash, cur.Spec.ConfigHash)
			case !meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionCertificateReady):
				return fmt.Errorf("CertificateReady not True: %+v", cur.Status.Conditions)
			}
			return nil
		})
	}
	setNamespaceMode := func(t *testing.T, mode v1alpha1.Mode) {
		t.Helper()
		p := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
		if err := admin.Get(ctx, client.ObjectKeyFromObject(p), p); apierrors.IsNotFound(err) {
			p.Spec.Mode = mode
			must(admin.Create(ctx, p))
		} else {
			must(err)
			p.Spec.Mode = mode
			must(admin.Update(ctx, p))
		}
		applied(t, mode)
	}
	viaClient := func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", clientAddr, 2*time.Second)
		if err != nil {
			return nil, err
		}
		return c, echoOnce(c, "through both proxies")
	}
	plain := func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", serverAddr, 2*time.Second)
		if err != nil {
			return nil, err
		}
		return c, echoOnce(c, "GET / HTTP/1.1\r\n")
	}
	var sent struct{ mtls, plaintext, rejected int64 }
	var open net.Conn

	t.Run("should accept mTLS from the client proxy and plaintext while PERMISSIVE", func(t *testing.T) {
		applied(t, v1alpha1.ModePermissive)
		var err error
		if open, err = viaClient(); err != nil {
			t.Fatal(err)
		}
		sent.mtls++
		c, err := plain()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sent.plaintext++
	})
	if open == nil {
		t.FailNow()
	}
	defer open.Close()

	t.Run("should refuse plaintext after the namespace goes STRICT, keep mTLS and the open connection", func(t *testing.T) {
		setNamespaceMode(t, v1alpha1.ModeStrict)
		if c, err := plain(); err == nil {
			c.Close()
			t.Fatal("plaintext passed on STRICT")
		}
		sent.rejected++
		c, err := viaClient()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sent.mtls++
		if err := echoOnce(open, "opened before the change"); err != nil {
			t.Fatalf("the mTLS connection opened before the change was dropped: %v", err)
		}
	})

	t.Run("should pass plaintext when the namespace goes DISABLE", func(t *testing.T) {
		setNamespaceMode(t, v1alpha1.ModeDisable)
		c, err := plain()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sent.plaintext++
	})

	t.Run("should report counters in the PodProxyConfig status that match what was sent", func(t *testing.T) {
		want := v1alpha1.ConnectionCounts{MTLS: sent.mtls, Plaintext: sent.plaintext, RejectedPlaintext: sent.rejected}
		waitStatus(t, ctx, admin, serverPPC, func(st *v1alpha1.PodProxyConfigStatus) error {
			if st.Connections == nil || *st.Connections != want {
				return fmt.Errorf("connections %+v, want %+v", st.Connections, want)
			}
			return nil
		})
	})

	t.Run("should have checked the server's SPIFFE ID on the client side", func(t *testing.T) {
		if got := clientProxy.metric(t, "meshtls_proxy_connections_total", `direction="outbound"`, `result="mtls"`); got != float64(sent.mtls) {
			t.Fatalf("client proxy outbound mTLS connections %v, want %d", got, sent.mtls)
		}
	})
}
