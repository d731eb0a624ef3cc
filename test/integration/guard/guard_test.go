// Package guard tests the PodProxyConfig guard (config/guard, a
// ValidatingAdmissionPolicy) and the operator's RBAC (config/rbac) against a real
// kube-apiserver, with real service-account tokens bound to real pods.
package guard

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start(context.Background(), testenv.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to start the local control plane: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// clientAs returns a client that impersonates a service account (the admin may).
func clientAs(t *testing.T, namespace, sa string) client.Client {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clientWithToken returns a client that authenticates with a bearer token only.
func clientWithToken(t *testing.T, token string) client.Client {
	cfg := &rest.Config{Host: env.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPodProxyConfigGuard(t *testing.T) {
	ctx := context.Background()
	admin := env.Client
	root := testenv.RepoRoot()
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshtls-system"}}))
	for _, f := range []string{"config/rbac/service_account.yaml", "config/rbac/role.yaml", "config/rbac/role_binding.yaml", "config/guard/podproxyconfig_guard.yaml"} {
		must(t, env.ApplyFile(ctx, filepath.Join(root, f)))
	}

	const ns = "guarded"
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}))
	// What the operator grants proxies in each meshed namespace.
	must(t, admin.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"security.meshtls.io"}, Resources: []string{"podproxyconfigs"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"security.meshtls.io"}, Resources: []string{"podproxyconfigs/status"}, Verbs: []string{"get", "update", "patch"}},
	}}))
	must(t, admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshtls-proxy"},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:serviceaccounts:" + ns}}}))

	pods := map[string]*corev1.Pod{}
	for _, name := range []string{"pod-a", "pod-b"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
		must(t, admin.Create(ctx, p))
		pods[name] = p
	}

	operator := clientAs(t, "meshtls-system", "meshtls-operator")
	ppc := func(name string) *v1alpha1.PodProxyConfig {
		return &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.PodProxyConfigSpec{PodUID: pods[name].UID, Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}}}
	}

	t.Run("someone other than the operator may not write a PodProxyConfig", func(t *testing.T) {
		// The policy is type-checked asynchronously after it is created: wait for it.
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if err = admin.Create(ctx, ppc("pod-a"), client.DryRunAll); err != nil {
				break
			}
		}
		if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "only meshtls-operator writes PodProxyConfigs") {
			t.Fatalf("want the guard to refuse the admin, got %v", err)
		}
	})

	t.Run("the operator's service account, with its generated RBAC, writes PodProxyConfigs", func(t *testing.T) {
		for _, name := range []string{"pod-a", "pod-b"} {
			if err := operator.Create(ctx, ppc(name)); err != nil {
				t.Fatalf("the operator could not create %s: %v", name, err)
			}
		}
	})

	kube := kubernetes.NewForConfigOrDie(env.Config)
	tokenFor := func(t *testing.T, pod *corev1.Pod) string {
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
		if pod != nil {
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", req, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	proxyA := clientWithToken(t, tokenFor(t, pods["pod-a"]))

	writeStatus := func(c client.Client, name string) error {
		obj := &v1alpha1.PodProxyConfig{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return err
		}
		obj.Status.AppliedHash = "sha256:0000"
		obj.Status.Connections = &v1alpha1.ConnectionCounts{MTLS: 1}
		return c.Status().Update(ctx, obj)
	}

	t.Run("a pod's proxy writes its own PodProxyConfig's status", func(t *testing.T) {
		if err := writeStatus(proxyA, "pod-a"); err != nil {
			t.Fatalf("pod-a's token could not write pod-a's status: %v", err)
		}
	})

	t.Run("a pod's proxy may not write another pod's PodProxyConfig status", func(t *testing.T) {
		err := writeStatus(proxyA, "pod-b")
		if err == nil || !strings.Contains(err.Error(), "status may be written only by the proxy of pod pod-b, not by the proxy of pod pod-a") {
			t.Fatalf("want the guard to refuse pod-a's token on pod-b, got %v", err)
		}
	})

	t.Run("a token not bound to a pod may not write any status", func(t *testing.T) {
		err := writeStatus(clientWithToken(t, tokenFor(t, nil)), "pod-a")
		if err == nil || !strings.Contains(err.Error(), "with a token bound to that pod") {
			t.Fatalf("want the guard to refuse an unbound token, got %v", err)
		}
	})

	t.Run("a pod's proxy may not write the spec", func(t *testing.T) {
		obj := &v1alpha1.PodProxyConfig{}
		if err := proxyA.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pod-a"}, obj); err != nil {
			t.Fatal(err)
		}
		obj.Spec.Inbound.Mode = v1alpha1.ModeDisable
		if err := proxyA.Update(ctx, obj); err == nil || !apierrors.IsForbidden(err) {
			t.Fatalf("want the proxy refused on spec, got %v", err)
		}
	})
}
