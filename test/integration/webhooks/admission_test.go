package webhooks

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func namespace(t *testing.T, name string, meshed bool) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if meshed {
		ns.Labels = map[string]string{"meshtls.io/inject": "enabled"}
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("failed to create %T %s: %v", obj, obj.GetName(), err)
	}
}

func pod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
}

func wmp(ns, name string, labels map[string]string, mode v1alpha1.Mode) *v1alpha1.WorkloadMTLSPolicy {
	return &v1alpha1.WorkloadMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Mode: mode},
	}
}

// waitIndexed waits until the operator's index (through the webhook) sees obj: a
// dry-run create of probe is refused as the test expects.
func eventuallyRefused(t *testing.T, obj client.Object, wants ...string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		err = k8s.Create(context.Background(), obj.DeepCopyObject().(client.Object), client.DryRunAll)
		if err != nil && containsAll(err.Error(), wants) {
			break
		}
	}
	if err == nil {
		t.Fatalf("want %s %s refused with %q, it was admitted", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), wants)
	}
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		t.Errorf("want an Invalid or Forbidden error, got %v", err)
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not contain %q:\n%v", want, err)
		}
	}
}

func containsAll(s string, wants []string) bool {
	for _, w := range wants {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

func TestWorkloadPolicyAdmission(t *testing.T) {
	namespace(t, "adm", true)
	for i, name := range []string{"f-1", "f-2", "f-3", "f-4", "f-5", "f-6"} {
		mustCreate(t, pod("adm", name, map[string]string{"app": "finance", "n": string(rune('a' + i))}))
	}
	mustCreate(t, wmp("adm", "finance", map[string]string{"app": "finance"}, v1alpha1.ModeStrict))

	t.Run("a policy that would select another policy's meshed pods is refused, naming it and five pods", func(t *testing.T) {
		broad := &v1alpha1.WorkloadMTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "adm", Name: "broad"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "n", Operator: metav1.LabelSelectorOpExists}}}},
		}
		eventuallyRefused(t, broad, "spec.selector", `WorkloadMTLSPolicy "finance"`, "f-1, f-2, f-3, f-4, f-5 (and 1 more)")
	})

	t.Run("a selector equal to another's once matchLabels are written as In is refused", func(t *testing.T) {
		same := &v1alpha1.WorkloadMTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "adm", Name: "same"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"finance"}}}}},
		}
		eventuallyRefused(t, same, "spec.selector", `WorkloadMTLSPolicy "finance"`, "same selector")
	})

	t.Run("equal selectors are refused even when they select no pod", func(t *testing.T) {
		mustCreate(t, wmp("adm", "ghosts", map[string]string{"app": "ghost"}, v1alpha1.ModeStrict))
		eventuallyRefused(t, wmp("adm", "ghosts-2", map[string]string{"app": "ghost"}, v1alpha1.ModeStrict), `WorkloadMTLSPolicy "ghosts"`, "same selector")
	})

	t.Run("equal targetRefs are refused, as sets", func(t *testing.T) {
		refs := func(names ...string) []gwapiv1.LocalPolicyTargetReference {
			var out []gwapiv1.LocalPolicyTargetReference
			for _, n := range names {
				out = append(out, gwapiv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: gwapiv1.ObjectName(n)})
			}
			return out
		}
		mustCreate(t, &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "adm", Name: "svc-ab"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{TargetRefs: refs("a", "b")}})
		eventuallyRefused(t, &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "adm", Name: "svc-ba"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{TargetRefs: refs("b", "a")}}, "spec.targetRefs", `WorkloadMTLSPolicy "svc-ab"`, "same Services")
	})

	t.Run("a selection that could overlap later is admitted with a warning", func(t *testing.T) {
		warnings.take()
		if err := warned.Create(context.Background(), wmp("adm", "tier", map[string]string{"tier": "web"}, v1alpha1.ModeStrict)); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(warnings.take(), "\n")
		if !strings.Contains(got, `may overlap with WorkloadMTLSPolicy "finance"`) {
			t.Errorf("want an overlap warning, got %q", got)
		}
	})
}

func TestFloorAdmission(t *testing.T) {
	ctx := context.Background()
	namespace(t, "floor", true)
	mustCreate(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "floor", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModePermissive}})
	mustCreate(t, &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "floor", Name: "legacy"},
		Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "legacy"}},
			PortLevelMTLS: []v1alpha1.PortMTLS{{Port: 8080, Mode: v1alpha1.ModeDisable}}}})
	mesh := &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.MeshMTLSPolicySpec{
		Mode: v1alpha1.ModeStrict, MinimumMode: v1alpha1.ModeDisable, TrustDomain: "cluster.local",
		IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}}}
	mustCreate(t, mesh)
	t.Cleanup(func() { deleteMesh(t) })

	t.Run("raising minimumMode over weaker policies is admitted with a warning listing them", func(t *testing.T) {
		warnings.take()
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = warned.Get(ctx, client.ObjectKeyFromObject(mesh), mesh); err != nil {
				continue
			}
			mesh.Spec.MinimumMode = v1alpha1.ModeStrict
			if err = warned.Update(ctx, mesh); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("raising the floor must be admitted: %v", err)
		}
		got := strings.Join(warnings.take(), "\n")
		for _, want := range []string{"NamespaceMTLSPolicy floor/default (PERMISSIVE)", "WorkloadMTLSPolicy floor/legacy (DISABLE)", "raised"} {
			if !strings.Contains(got, want) {
				t.Errorf("warning %q lacks %q", got, want)
			}
		}
	})

	t.Run("a namespace mode below the floor is refused", func(t *testing.T) {
		namespace(t, "floor-2", true)
		eventuallyRefused(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "floor-2", Name: "default"},
			Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModePermissive}}, "spec.mode", "weaker than the mesh minimumMode STRICT")
	})

	t.Run("a workload mode below the floor is refused", func(t *testing.T) {
		eventuallyRefused(t, wmp("floor", "weak", map[string]string{"app": "weak"}, v1alpha1.ModeDisable), "spec.mode", "weaker than the mesh minimumMode STRICT")
	})

	t.Run("a port mode below the floor is refused, naming the entry", func(t *testing.T) {
		p := wmp("floor", "weak-port", map[string]string{"app": "weak-port"}, v1alpha1.ModeStrict)
		p.Spec.PortLevelMTLS = []v1alpha1.PortMTLS{{Port: 9000, Mode: v1alpha1.ModeStrict}, {Port: 9090, Mode: v1alpha1.ModePermissive}}
		eventuallyRefused(t, p, "spec.portLevelMTLS[1].mode", "port 9090", "weaker than the mesh minimumMode STRICT")
	})
}

func TestRolloutAdmission(t *testing.T) {
	for _, n := range []string{"shop-a", "shop-b"} {
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"team": "shop"}}}); err != nil {
			t.Fatal(err)
		}
	}
	rollout := func(name string, labels map[string]string) *v1alpha1.MTLSRollout {
		return &v1alpha1.MTLSRollout{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.MTLSRolloutSpec{NamespaceSelector: metav1.LabelSelector{MatchLabels: labels}}}
	}
	mustCreate(t, rollout("shop", map[string]string{"team": "shop"}))

	t.Run("a rollout overlapping an unfinished rollout is refused, naming it and the namespaces", func(t *testing.T) {
		all := rollout("all", nil)
		all.Spec.NamespaceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpExists}}
		eventuallyRefused(t, all, "spec.namespaceSelector", `MTLSRollout "shop"`, "shop-a, shop-b")
	})
	t.Run("a rollout of other namespaces is admitted", func(t *testing.T) {
		mustCreate(t, rollout("bank", map[string]string{"team": "bank"}))
	})
}
