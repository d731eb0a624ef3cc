// Package guard tests the PodProxyConfig guard (config/guard, a
// ValidatingAdmissionPolicy, rendered with kustomize as `kubectl apply -k` renders it)
// and the operator's RBAC (config/rbac) against a real kube-apiserver and a real
// kube-controller-manager, with real service-account tokens bound to real pods: the
// garbage collector and the namespace controller run as their own ServiceAccounts, as
// in a cluster, so an orphaning or foreground delete the guard blocked would hang here.
package guard

import (
	"context"
	"fmt"
	"io/fs"
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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/scheme"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	guardName = "meshtls-podproxyconfig-guard"
	gcUser    = "system:serviceaccount:kube-system:generic-garbage-collector"
	kcmUser   = "system:kube-controller-manager"
	managedBy = "app.kubernetes.io/managed-by"
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

// render builds a copy of the repository's config/ with kustomize, after setting the
// namespace of dir's kustomization (as `kustomize edit set namespace` would).
func render(t *testing.T, dir, namespace string) []*unstructured.Unstructured {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	root := testenv.RepoRoot()
	err := filepath.WalkDir(filepath.Join(root, "config"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		return mem.WriteFile(filepath.Join("/", rel), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	kfile := filepath.Join("/", dir, "kustomization.yaml")
	b, err := mem.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	var k kustypes.Kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	k.Namespace = namespace
	if b, err = yaml.Marshal(&k); err != nil {
		t.Fatal(err)
	}
	if err := mem.WriteFile(kfile, b); err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, filepath.Join("/", dir))
	if err != nil {
		t.Fatalf("kustomize build %s (namespace %s): %v", dir, namespace, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the rendered manifests", kind, name)
	return nil
}

// guardOperator is the operator username a rendered guard lets write PodProxyConfigs.
func guardOperator(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	vars, _, _ := unstructured.NestedSlice(find(t, objs, "ValidatingAdmissionPolicy", guardName).Object, "spec", "variables")
	for _, v := range vars {
		if m := v.(map[string]any); m["name"] == "operator" {
			return strings.Trim(m["expression"].(string), "'")
		}
	}
	t.Fatal("the guard has no variable named operator")
	return ""
}

// install creates or replaces rendered objects.
func install(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range objs {
		current := &unstructured.Unstructured{}
		current.SetGroupVersionKind(obj.GroupVersionKind())
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), current)
		switch {
		case apierrors.IsNotFound(err):
			must(t, env.Client.Create(ctx, obj))
		case err != nil:
			t.Fatal(err)
		default:
			obj.SetResourceVersion(current.GetResourceVersion())
			must(t, env.Client.Update(ctx, obj))
		}
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

func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func gone(c client.Client, obj client.Object) func() error {
	return func() error {
		err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%T %s is still there (deletionTimestamp %v, finalizers %v)", obj, obj.GetName(), obj.GetDeletionTimestamp(), obj.GetFinalizers())
	}
}

func wantRefused(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want a refusal containing %q, got none", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("want a refusal containing %q, got %v", p, err)
		}
	}
}

// cluster is what the tests share: the operator's RBAC, a meshed namespace with a
// proxy role, pods and clients.
type cluster struct {
	ns       string
	operator client.Client
	kube     kubernetes.Interface
}

func setUp(t *testing.T, ns string) *cluster {
	ctx := context.Background()
	admin := env.Client
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshtls-system"}}))
	// The operator's RBAC and the proxies' ClusterRole, as config/default installs them.
	install(t, render(t, "config/rbac", "meshtls-system"))
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}))
	// What the operator grants proxies in each meshed namespace.
	must(t, admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "meshtls-proxy"},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "system:serviceaccounts:" + ns}}}))
	return &cluster{ns: ns, operator: clientAs(t, "meshtls-system", "meshtls-operator"), kube: kubernetes.NewForConfigOrDie(env.Config)}
}

func (c *cluster) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// ppc is a PodProxyConfig as the operator makes it: named after the pod, owned by it
// (controller, not blocking the owner's deletion), labelled managed-by.
func (c *cluster) ppc(pod *corev1.Pod) *v1alpha1.PodProxyConfig {
	return &v1alpha1.PodProxyConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name,
			Labels: map[string]string{managedBy: "meshtls-operator"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false)}}},
		Spec: v1alpha1.PodProxyConfigSpec{PodUID: pod.UID, ServiceAccountName: "app", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}},
	}
}

// createPPC creates a pod's PodProxyConfig as the operator.
func (c *cluster) createPPC(t *testing.T, pod *corev1.Pod) *v1alpha1.PodProxyConfig {
	t.Helper()
	obj := c.ppc(pod)
	if err := c.operator.Create(context.Background(), obj); err != nil {
		t.Fatalf("the operator could not create PodProxyConfig %s: %v", pod.Name, err)
	}
	return obj
}

// tokenFor is a token of ServiceAccount "app", bound to pod (or to nothing).
func (c *cluster) tokenFor(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := c.kube.CoreV1().ServiceAccounts(c.ns).CreateToken(context.Background(), "app", req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func (c *cluster) writeStatus(cl client.Client, name string) error {
	ctx := context.Background()
	obj := &v1alpha1.PodProxyConfig{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: name}, obj); err != nil {
		return err
	}
	obj.Status.AppliedHash = "sha256:0000"
	obj.Status.Connections = &v1alpha1.ConnectionCounts{MTLS: 1}
	return cl.Status().Update(ctx, obj)
}

// waitForGuard waits until the policy (type-checked asynchronously after it is
// written) refuses what it should.
func waitForGuard(t *testing.T, probe func() error, want string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = probe(); err != nil && strings.Contains(err.Error(), want) {
			return
		}
	}
	t.Fatalf("the guard is not in force: want a refusal containing %q, got %v", want, err)
}

func TestPodProxyConfigGuard(t *testing.T) {
	ctx := context.Background()
	admin := env.Client
	c := setUp(t, "guarded")
	install(t, render(t, "config/guard", "meshtls-system"))

	podA, podB := c.pod(t, "pod-a"), c.pod(t, "pod-b")
	waitForGuard(t, func() error { return admin.Create(ctx, c.ppc(podA), client.DryRunAll) }, "only meshtls-operator writes PodProxyConfigs")

	t.Run("someone other than the operator may not create a PodProxyConfig", func(t *testing.T) {
		wantRefused(t, admin.Create(ctx, c.ppc(podA)), "PodProxyConfig guarded/pod-a: only meshtls-operator writes PodProxyConfigs", "(admin may not)")
	})

	t.Run("the operator's service account, with its generated RBAC, writes PodProxyConfigs", func(t *testing.T) {
		c.createPPC(t, podA)
		c.createPPC(t, podB)
	})

	proxyA := clientWithToken(t, c.tokenFor(t, podA))

	t.Run("a pod's proxy writes its own PodProxyConfig's status", func(t *testing.T) {
		if err := c.writeStatus(proxyA, "pod-a"); err != nil {
			t.Fatalf("pod-a's token could not write pod-a's status: %v", err)
		}
	})

	t.Run("a pod's proxy may not write another pod's PodProxyConfig status", func(t *testing.T) {
		wantRefused(t, c.writeStatus(proxyA, "pod-b"), "status may be written only by the proxy of pod pod-b, not by the proxy of pod pod-a")
	})

	t.Run("a pod's proxy may not write the status of a PodProxyConfig for another pod of its name", func(t *testing.T) {
		// What a PodProxyConfig looks like once its pod was replaced by another of the
		// same name (a StatefulSet's): the spec names the new pod's UID.
		setUID := func(uid types.UID) {
			obj := &v1alpha1.PodProxyConfig{}
			must(t, c.operator.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-a"}, obj))
			before := obj.DeepCopy()
			obj.Spec.PodUID = uid
			must(t, c.operator.Patch(ctx, obj, client.MergeFrom(before)))
		}
		setUID("00000000-0000-0000-0000-000000000001")
		wantRefused(t, c.writeStatus(proxyA, "pod-a"), "not by the proxy of another pod of that name (UID "+string(podA.UID)+")")
		setUID(podA.UID)
		if err := c.writeStatus(proxyA, "pod-a"); err != nil {
			t.Fatalf("with its UID restored, pod-a's token could not write pod-a's status: %v", err)
		}
	})

	t.Run("a token not bound to a pod may not write any status", func(t *testing.T) {
		wantRefused(t, c.writeStatus(clientWithToken(t, c.tokenFor(t, nil)), "pod-a"), "with a token bound to that pod")
	})

	t.Run("an admin may not write a status either", func(t *testing.T) {
		wantRefused(t, c.writeStatus(admin, "pod-a"), "with a token bound to that pod")
	})

	t.Run("a pod's proxy may not write the spec", func(t *testing.T) {
		obj := &v1alpha1.PodProxyConfig{}
		must(t, proxyA.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-a"}, obj))
		obj.Spec.Inbound.Mode = v1alpha1.ModeDisable
		if err := proxyA.Update(ctx, obj); err == nil || !apierrors.IsForbidden(err) {
			t.Fatalf("want the proxy refused on spec, got %v", err)
		}
	})

	t.Run("the garbage collector's identity may drop owners but not change the spec", func(t *testing.T) {
		gc := clientAs(t, "kube-system", "generic-garbage-collector")
		obj := &v1alpha1.PodProxyConfig{}
		must(t, admin.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-b"}, obj))
		obj.Spec.Inbound.Mode = v1alpha1.ModeDisable
		wantRefused(t, gc.Update(ctx, obj, client.DryRunAll), "only meshtls-operator writes PodProxyConfigs", "("+gcUser+" may not)")
		must(t, admin.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-b"}, obj))
		obj.OwnerReferences = nil
		if err := gc.Update(ctx, obj, client.DryRunAll); err != nil {
			t.Fatalf("the garbage collector's identity could not drop an owner reference: %v", err)
		}
	})

	// kube-controller-manager without --use-service-account-credentials: its
	// controllers act as one user (this control plane runs them as service accounts,
	// so the test impersonates that user, with the rights such a cluster grants it).
	t.Run("kube-controller-manager's own user may do what its garbage collector and namespace controller may", func(t *testing.T) {
		must(t, admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-kcm-podproxyconfigs"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"security.meshtls.io"}, Resources: []string{"podproxyconfigs", "podproxyconfigs/status"}, Verbs: []string{"get", "update", "patch", "delete"}}}}))
		must(t, admin.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-kcm-podproxyconfigs"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "test-kcm-podproxyconfigs"},
			Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: kcmUser}}}))
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: kcmUser, Groups: []string{"system:authenticated"}}
		kcm, err := client.New(cfg, client.Options{Scheme: scheme.New()})
		if err != nil {
			t.Fatal(err)
		}
		obj := &v1alpha1.PodProxyConfig{}
		must(t, admin.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-b"}, obj))
		obj.Spec.Inbound.Mode = v1alpha1.ModeDisable
		wantRefused(t, kcm.Update(ctx, obj, client.DryRunAll), "only meshtls-operator writes PodProxyConfigs", "("+kcmUser+" may not)")
		must(t, admin.Get(ctx, client.ObjectKey{Namespace: c.ns, Name: "pod-b"}, obj))
		obj.OwnerReferences = nil
		obj.Finalizers = append(obj.Finalizers, "orphan")
		if err := kcm.Update(ctx, obj, client.DryRunAll); err != nil {
			t.Fatalf("kube-controller-manager's user could not drop an owner reference: %v", err)
		}
		if err := kcm.Delete(ctx, obj, client.DryRunAll); err != nil {
			t.Fatalf("kube-controller-manager's user could not delete a PodProxyConfig: %v", err)
		}
		wantRefused(t, kcm.Status().Update(ctx, obj, client.DryRunAll), "with a token bound to that pod")
	})

	t.Run("others may not delete the operator's PodProxyConfigs", func(t *testing.T) {
		wantRefused(t, admin.Delete(ctx, c.ppc(podA)), "PodProxyConfig guarded/pod-a: only meshtls-operator deletes the PodProxyConfigs it made", "delete the pod instead (admin may not)")
		wantRefused(t, clientAs(t, c.ns, "app").Delete(ctx, c.ppc(podA)), "forbidden")
	})

	t.Run("a PodProxyConfig the operator did not make may be deleted by whoever RBAC lets", func(t *testing.T) {
		stray := c.ppc(c.pod(t, "pod-stray"))
		stray.Labels = nil
		must(t, c.operator.Create(ctx, stray))
		if err := admin.Delete(ctx, stray); err != nil {
			t.Fatalf("the admin could not delete an unmanaged PodProxyConfig: %v", err)
		}
	})

	t.Run("the operator deletes a stale PodProxyConfig", func(t *testing.T) {
		stale := c.createPPC(t, c.pod(t, "pod-stale"))
		if err := c.operator.Delete(ctx, stale, client.Preconditions{UID: &stale.UID}); err != nil {
			t.Fatalf("the operator could not delete its own PodProxyConfig: %v", err)
		}
	})

	// The garbage collector and the namespace controller of kube-controller-manager,
	// for real. With the guard in their way these hang; the deadlines say how long
	// they take here (well under a second when nothing blocks them).
	t.Run("an orphaning delete of a pod finishes and leaves its PodProxyConfig without owner", func(t *testing.T) {
		pod := c.pod(t, "pod-orphan")
		ppc := c.createPPC(t, pod)
		if err := admin.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the pod deleted", gone(admin, &corev1.Pod{ObjectMeta: pod.ObjectMeta}))
		got := &v1alpha1.PodProxyConfig{}
		must(t, admin.Get(ctx, client.ObjectKeyFromObject(ppc), got))
		if len(got.OwnerReferences) != 0 {
			t.Errorf("the orphaned PodProxyConfig still has owners %v", got.OwnerReferences)
		}
		t.Run("and a foreground delete of that PodProxyConfig by the operator finishes", func(t *testing.T) {
			if err := c.operator.Delete(ctx, got, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, "the PodProxyConfig deleted", gone(admin, &v1alpha1.PodProxyConfig{ObjectMeta: got.ObjectMeta}))
		})
	})

	t.Run("a background delete of a pod collects its PodProxyConfig", func(t *testing.T) {
		pod := c.pod(t, "pod-bg")
		ppc := c.createPPC(t, pod)
		must(t, admin.Delete(ctx, pod))
		eventually(t, 30*time.Second, "the PodProxyConfig collected", gone(admin, ppc))
	})

	t.Run("a foreground delete of a pod finishes, its PodProxyConfig first", func(t *testing.T) {
		pod := c.pod(t, "pod-fg")
		ppc := c.createPPC(t, pod)
		must(t, admin.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationForeground)))
		eventually(t, 30*time.Second, "the pod deleted", gone(admin, &corev1.Pod{ObjectMeta: pod.ObjectMeta}))
		eventually(t, 30*time.Second, "the PodProxyConfig collected", gone(admin, ppc))
	})

	t.Run("a namespace with PodProxyConfigs is deleted", func(t *testing.T) {
		d := setUp(t, "doomed")
		d.createPPC(t, d.pod(t, "web"))
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}
		must(t, admin.Delete(ctx, ns))
		eventually(t, 60*time.Second, "the namespace deleted", gone(admin, ns))
	})
}

// TestGuardFollowsTheInstallNamespace installs the guard as rendered for another
// namespace, last (it replaces the guard the other tests use).
func TestGuardFollowsTheInstallNamespace(t *testing.T) {
	ctx := context.Background()
	const other = "mesh-ops"

	t.Run("kustomize puts the namespace of config/guard into the operator username", func(t *testing.T) {
		objs := render(t, "config/guard", other)
		if got, want := guardOperator(t, objs), "system:serviceaccount:"+other+":meshtls-operator"; got != want {
			t.Errorf("operator = %s, want %s", got, want)
		}
		for _, o := range objs {
			if o.GetKind() != "ValidatingAdmissionPolicy" && o.GetKind() != "ValidatingAdmissionPolicyBinding" {
				t.Errorf("config/guard renders %s %s: only the policy and its binding may be applied", o.GetKind(), o.GetName())
			}
		}
	})

	t.Run("config/default's guard names the ServiceAccount config/default installs", func(t *testing.T) {
		objs := render(t, "config/default", other)
		sa := find(t, objs, "ServiceAccount", "meshtls-operator")
		if got, want := guardOperator(t, objs), "system:serviceaccount:"+sa.GetNamespace()+":meshtls-operator"; got != want {
			t.Errorf("with config/default's namespace set to %s, the guard lets %s write PodProxyConfigs, not the operator's ServiceAccount %s", other, got, want)
		}
	})

	t.Run("installed, it admits the operator of that namespace only", func(t *testing.T) {
		c := setUp(t, "moved")
		must(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}))
		must(t, env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshtls-operator-" + other},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "meshtls-operator"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: other, Name: "meshtls-operator"}}}))
		install(t, render(t, "config/guard", other))
		pod := c.pod(t, "web")
		waitForGuard(t, func() error { return c.operator.Create(ctx, c.ppc(pod), client.DryRunAll) },
			"(system:serviceaccount:meshtls-system:meshtls-operator may not)")
		if err := clientAs(t, other, "meshtls-operator").Create(ctx, c.ppc(pod)); err != nil {
			t.Fatalf("the operator in %s could not create a PodProxyConfig: %v", other, err)
		}
	})
}
