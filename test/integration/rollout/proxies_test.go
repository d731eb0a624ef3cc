package rollout

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/scheme"
)

// proxy plays one pod's meshtls-proxy: it reads its own PodProxyConfig and reports
// its status with a token bound to its pod, edge-triggered as the real proxy reports
// (a write only when the applied hash, a condition or a counter changes).
type proxy struct {
	namespace, pod string
	client         client.Client

	mu sync.Mutex
	// hold: the proxy has not caught up; it keeps reporting the hash it applied
	// before (none at first).
	hold bool
	// speaking: a client keeps sending plaintext (lastPlaintext follows the clock).
	speaking      bool
	lastPlaintext *metav1.Time
	rejected      int64
	applied       string
}

func (p *proxy) set(f func(p *proxy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// report brings the PodProxyConfig's status in line with the proxy's state.
func (p *proxy) report(ctx context.Context) error {
	ppc := &v1alpha1.PodProxyConfig{}
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: p.namespace, Name: p.pod}, ppc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // the operator has not made it yet
		}
		return err
	}
	p.mu.Lock()
	if p.speaking {
		p.lastPlaintext = &metav1.Time{Time: time.Now().Truncate(time.Second)}
	}
	if !p.hold {
		p.applied = ppc.Spec.ConfigHash
	}
	want := ppc.Status.DeepCopy()
	want.AppliedHash = p.applied
	// A proxy that serves traffic: its mTLS counter moves every second, so it reports,
	// and the rollout sees reports after each pod's plaintext window (a quiet proxy
	// reports nothing new, and the rollout then waits its report interval, a minute).
	want.Connections = &v1alpha1.ConnectionCounts{MTLS: time.Now().Unix(), RejectedPlaintext: p.rejected}
	want.LastPlaintextTime = p.lastPlaintext
	p.mu.Unlock()
	applied := metav1.ConditionFalse
	if want.AppliedHash != "" && want.AppliedHash == ppc.Spec.ConfigHash {
		applied = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&want.Conditions, metav1.Condition{Type: v1alpha1.ConditionApplied, Status: applied, Reason: "Proxy", Message: "as the test says"})
	meta.SetStatusCondition(&want.Conditions, metav1.Condition{Type: v1alpha1.ConditionCertificateReady, Status: metav1.ConditionTrue, Reason: "Loaded", Message: "as the test says"})

	if fmt.Sprint(*want) == fmt.Sprint(ppc.Status) {
		return nil
	}
	ppc.Status = *want
	return p.client.Status().Update(ctx, ppc)
}

// proxies runs the proxies of a test until it ends.
type proxies struct {
	byName map[string]*proxy // namespace/pod
}

func (ps *proxies) get(namespace, pod string) *proxy { return ps.byName[namespace+"/"+pod] }

func (ps *proxies) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, p := range ps.byName {
				if err := p.report(ctx); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) {
					t.Errorf("proxy of %s/%s: %v", p.namespace, p.pod, err)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// meshedNamespace makes a namespace labelled for injection and for the rollout, a
// ServiceAccount "app", the proxies' read-and-report-status permission (which the
// identity controller grants in a cluster), and n pods that the real injector
// injects. mode is the namespace's NamespaceMTLSPolicy mode ("" for none).
func meshedNamespace(t *testing.T, ps *proxies, name string, labels map[string]string, mode v1alpha1.Mode, n int) {
	t.Helper()
	ctx := context.Background()
	all := map[string]string{"meshtls.io/inject": "enabled"}
	for k, v := range labels {
		all[k] = v
	}
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}}))
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "app"}}))
	must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "test-proxy"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"security.meshtls.io"}, Resources: []string{"podproxyconfigs"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"security.meshtls.io"}, Resources: []string{"podproxyconfigs/status"}, Verbs: []string{"get", "update", "patch"}},
	}}))
	must(t, k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "test-proxy"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "test-proxy"},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:serviceaccounts:" + name}}}))
	if mode != "" {
		// The webhooks may still be starting: retry.
		eventually(t, 30*time.Second, "create NamespaceMTLSPolicy "+name+"/default", func() error {
			return ignoreExists(k8s.Create(ctx, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: mode}}))
		})
	}
	kube := kubernetes.NewForConfigOrDie(env.Config)
	for i := range n {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}
		// The injector may still be starting: retry.
		eventually(t, 30*time.Second, "create pod "+pod.Name, func() error { return ignoreExists(k8s.Create(ctx, pod)) })
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			t.Fatal(err)
		}
		injected := false
		var names []string
		for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			injected = injected || c.Name == "meshtls-proxy"
			names = append(names, c.Name)
		}
		if !injected {
			t.Fatalf("pod %s/%s was not injected: containers %v", name, pod.Name, names)
		}
		tr, err := kube.CoreV1().ServiceAccounts(name).CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(&rest.Config{Host: env.Config.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}},
			client.Options{Scheme: scheme.New()})
		if err != nil {
			t.Fatal(err)
		}
		if ps.byName == nil {
			ps.byName = map[string]*proxy{}
		}
		ps.byName[name+"/"+pod.Name] = &proxy{namespace: name, pod: pod.Name, client: c}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err := ignoreExists(err); err != nil {
		t.Fatal(err)
	}
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
