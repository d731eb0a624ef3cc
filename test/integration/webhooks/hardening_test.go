package webhooks

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
)

// deleteMesh lowers the floor of MeshMTLSPolicy default, as its refusal says to, and
// deletes it.
func deleteMesh(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	mesh := &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"minimumMode":"DISABLE"}}`))
	if err := k8s.Patch(ctx, mesh, patch); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("failed to lower the floor: %v", err)
	}
	if err := k8s.Delete(ctx, mesh); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("failed to delete the mesh policy once its floor was lowered: %v", err)
	}
}

// untilAdmitted retries an update (through the webhook, which may lag the index by a
// moment) until it is admitted.
func untilAdmitted(t *testing.T, what string, obj client.Object, change func()) {
	t.Helper()
	ctx := context.Background()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			continue
		}
		change()
		if err = k8s.Update(ctx, obj); err == nil {
			return
		}
	}
	t.Fatalf("%s must be admitted: %v", what, err)
}

// metadataEditsPass checks that a policy in a bad state still takes every update that
// makes nothing worse, and a delete that waits on a finalizer.
func metadataEditsPass(t *testing.T, obj client.Object) {
	t.Helper()
	untilAdmitted(t, "a label edit", obj, func() { obj.SetLabels(map[string]string{"team": "payments"}) })
	untilAdmitted(t, "adding a finalizer", obj, func() { obj.SetFinalizers([]string{"example.com/hold"}) })
	untilAdmitted(t, "an unchanged re-apply (an update with the same spec)", obj, func() {})
	if err := k8s.Delete(context.Background(), obj); err != nil {
		t.Fatalf("a delete must never be refused: %v", err)
	}
	untilAdmitted(t, "removing the finalizer of a terminating policy", obj, func() { obj.SetFinalizers(nil) })
	err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	for deadline := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		err = k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	}
	if !apierrors.IsNotFound(err) {
		t.Errorf("the policy is stuck after its finalizer was removed: %v", err)
	}
}

func TestUpdatesJudgedAgainstTheOldObject(t *testing.T) {
	ctx := context.Background()
	namespace(t, "upd", true)
	// Two policies with disjoint selectors, then a pod both select: the newer loses it.
	mustCreate(t, wmp("upd", "older", map[string]string{"app": "pay"}, v1alpha1.ModeStrict))
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has second granularity
	mustCreate(t, wmp("upd", "newer", map[string]string{"tier": "web"}, v1alpha1.ModePermissive))
	mustCreate(t, pod("upd", "both", map[string]string{"app": "pay", "tier": "web"}))

	t.Run("a conflicted policy takes metadata edits, a re-apply and a finalizer removal", func(t *testing.T) {
		newer := &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "upd", Name: "newer"}}
		untilAdmitted(t, "raising the mode of a conflicted policy", newer, func() { newer.Spec.Mode = v1alpha1.ModeStrict })
		metadataEditsPass(t, newer)
	})

	t.Run("a change that adds a conflict is still refused", func(t *testing.T) {
		mustCreate(t, wmp("upd", "cart", map[string]string{"app": "cart"}, v1alpha1.ModeStrict))
		mustCreate(t, pod("upd", "pay-2", map[string]string{"app": "pay"}))
		cart := &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "upd", Name: "cart"}}
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = k8s.Get(ctx, client.ObjectKeyFromObject(cart), cart); err != nil {
				continue
			}
			cart.Spec.Selector.MatchLabels = map[string]string{"app": "pay"}
			if err = k8s.Update(ctx, cart); err != nil && strings.Contains(err.Error(), `WorkloadMTLSPolicy "older"`) {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "same selector") || !strings.Contains(err.Error(), "pods in common: both, pay-2") {
			t.Fatalf("want the update refused as equal to \"older\", naming the pods in common, got %v", err)
		}
	})

	t.Run("a below-floor policy takes metadata edits and a raised mode; lowering is refused; the floor cannot be deleted", func(t *testing.T) {
		nmp := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "upd", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModeDisable}}
		mustCreate(t, nmp)
		mesh := &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.MeshMTLSPolicySpec{
			Mode: v1alpha1.ModeStrict, MinimumMode: v1alpha1.ModeStrict, TrustDomain: "cluster.local",
			IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}}}
		mustCreate(t, mesh)
		t.Cleanup(func() { deleteMesh(t) })

		untilAdmitted(t, "raising a below-floor mode, still below the floor", nmp, func() { nmp.Spec.Mode = v1alpha1.ModePermissive })
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			_ = k8s.Get(ctx, client.ObjectKeyFromObject(nmp), nmp)
			nmp.Spec.Mode = v1alpha1.ModeDisable
			if err = k8s.Update(ctx, nmp); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "spec.mode") {
			t.Errorf("lowering a mode below the floor must be refused, got %v", err)
		}

		err = k8s.Delete(ctx, &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "lower spec.minimumMode to DISABLE first") {
			t.Errorf("deleting the mesh policy while its floor is STRICT must be refused with what to do, got %v", err)
		}
		metadataEditsPass(t, nmp)
	})
}

func TestSelectorsMeanWhatTheySay(t *testing.T) {
	namespace(t, "sel", true)
	expr := func(key string, op metav1.LabelSelectorOperator, values ...string) *v1alpha1.WorkloadMTLSPolicy {
		return &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "sel", Name: "p"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}}}
	}
	many := expr("a", metav1.LabelSelectorOpExists)
	for i := 0; i < 17; i++ {
		many.Spec.Selector.MatchExpressions = append(many.Spec.Selector.MatchExpressions, metav1.LabelSelectorRequirement{Key: "k", Operator: metav1.LabelSelectorOpExists})
	}
	manyValues := expr("a", metav1.LabelSelectorOpIn)
	for i := 0; i < 65; i++ {
		manyValues.Spec.Selector.MatchExpressions[0].Values = append(manyValues.Spec.Selector.MatchExpressions[0].Values, "v")
	}
	for _, tt := range []struct {
		name  string
		obj   client.Object
		wants []string
	}{
		{"an unknown operator", expr("app", "Matches", "x"), []string{"spec.selector", "operator must be one of In, NotIn, Exists, DoesNotExist"}},
		{"In without values", expr("app", metav1.LabelSelectorOpIn), []string{"spec.selector", "values must be non-empty when the operator is In or NotIn"}},
		{"NotIn without values", expr("app", metav1.LabelSelectorOpNotIn), []string{"spec.selector", "values must be non-empty"}},
		{"Exists with values", expr("app", metav1.LabelSelectorOpExists, "x"), []string{"spec.selector", "values must be empty when the operator is Exists or DoesNotExist"}},
		{"a malformed key", expr("bad key!", metav1.LabelSelectorOpExists), []string{"spec.selector.matchExpressions[0].key", "name part must consist of"}},
		{"a malformed value", expr("app", metav1.LabelSelectorOpIn, "not a value!"), []string{"spec.selector.matchExpressions[0].values[0]", "a valid label must be"}},
		{"a malformed matchLabels key", wmp("sel", "p", map[string]string{"-bad": "x"}, v1alpha1.ModeStrict), []string{"spec.selector.matchLabels", "name part must consist of"}},
		{"more than 16 expressions", many, []string{"spec.selector", "at most 16 matchExpressions"}},
		{"more than 64 values", manyValues, []string{"spec.selector", "at most 64 values"}},
		{"an empty rollout namespaceSelector", &v1alpha1.MTLSRollout{ObjectMeta: metav1.ObjectMeta{Name: "everything"}}, []string{"spec.namespaceSelector", "may not be empty"}},
		{"a rollout namespaceSelector with In and no values", &v1alpha1.MTLSRollout{ObjectMeta: metav1.ObjectMeta{Name: "bad"},
			Spec: v1alpha1.MTLSRolloutSpec{NamespaceSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn}}}}},
			[]string{"spec.namespaceSelector", "values must be non-empty"}},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) { eventuallyRefused(t, tt.obj, tt.wants...) })
	}
}

func TestOneRuleForMeshedPods(t *testing.T) {
	namespace(t, "forge", true)
	t.Run("a forged meshtls-proxy container is refused", func(t *testing.T) {
		p := pod("forge", "fake", nil)
		p.Spec.InitContainers = []corev1.Container{{Name: inject.ProxyContainer, Image: "evil/proxy:1"}}
		eventuallyRefused(t, p, "meshtls-proxy", "let the webhook inject them")
	})
	t.Run("a forged meshtls-init container is refused", func(t *testing.T) {
		p := pod("forge", "fake-init", nil)
		p.Spec.InitContainers = []corev1.Container{{Name: inject.CaptureContainer, Image: "busybox", Command: []string{"true"}}}
		eventuallyRefused(t, p, "meshtls", "let the webhook inject them")
	})
	t.Run("an invalid outbound CIDR is refused with its annotation", func(t *testing.T) {
		p := pod("forge", "cidr", nil)
		p.Annotations = map[string]string{inject.AnnotationExcludeOutboundCIDRs: "10.0.0.0/33"}
		eventuallyRefused(t, p, "meshtls.io/exclude-outbound-ip-ranges")
	})
	t.Run("a user-set original-probes annotation does not survive injection", func(t *testing.T) {
		p := pod("forge", "probes", nil)
		p.Annotations = map[string]string{inject.AnnotationOriginalProbes: `{"app/liveness":{"httpGet":{"host":"169.254.169.254","port":80}}}`}
		got := created(t, p)
		if v, ok := got.Annotations[inject.AnnotationOriginalProbes]; ok {
			t.Errorf("want the annotation removed (the pod has no probe to rewrite), got %q", v)
		}
	})
	t.Run("an inbound exclusion is refused while the mesh floor is above DISABLE", func(t *testing.T) {
		mesh := &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.MeshMTLSPolicySpec{
			Mode: v1alpha1.ModeStrict, MinimumMode: v1alpha1.ModePermissive, TrustDomain: "cluster.local",
			IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}}}
		mustCreate(t, mesh)
		t.Cleanup(func() { deleteMesh(t) })
		p := pod("forge", "bypass", nil)
		p.Annotations = map[string]string{inject.AnnotationExcludeInboundPorts: "8081"}
		eventuallyRefused(t, p, "metadata.annotations[meshtls.io/exclude-inbound-ports]", "lets plaintext reach them past the proxy", "minimumMode is PERMISSIVE")
	})
}
