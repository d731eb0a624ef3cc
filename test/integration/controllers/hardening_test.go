package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func TestForeignPodProxyConfigIsReportedNotOverwritten(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "foreign", true)
	create(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "foreign", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModeStrict}})
	squatter := &v1alpha1.PodProxyConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "foreign", Name: "p"},
		Spec: v1alpha1.PodProxyConfigSpec{PodUID: "not-the-pod", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeDisable}}}
	create(t, squatter)
	pod := newPod("foreign", "p", nil)
	create(t, pod)

	nmp := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "foreign", Name: "default"}}
	expectPolicyCondition(t, nmp, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonProxyConfigNotOwned)
	if c := findCondition(nmp.Status.Conditions, v1alpha1.ConditionReady); c == nil || !contains(c.Message, "pods p in namespace foreign", "kubectl delete podproxyconfig") {
		t.Errorf("the condition must name the pod and say what to do, got %+v", c)
	}
	got, err := getPPC("foreign", "p")
	if err != nil || got.Spec.PodUID != "not-the-pod" || got.Spec.Inbound.Mode != v1alpha1.ModeDisable || got.Labels[managedBy] != "" {
		t.Fatalf("the foreign PodProxyConfig must be left as it was, got %+v (%v)", got, err)
	}
	eventually(t, wait, func() error {
		events := &eventsv1.EventList{}
		if err := k8s.List(ctx, events, client.InNamespace("foreign")); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Regarding.Kind == "Pod" && e.Regarding.Name == "p" && e.Reason == v1alpha1.ReasonProxyConfigNotOwned && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no Warning %s event on pod p among %d events", v1alpha1.ReasonProxyConfigNotOwned, len(events.Items))
	})

	// Once the squatter is gone, the pod gets its own and the policy is Ready.
	if err := k8s.Delete(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	expectInbound(t, "foreign", "p", "STRICT")
	expectPolicyCondition(t, nmp, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReconciled)
}

func TestSidecarAndUncapturedPortsAreShown(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "sidecar", true)
	late := newPod("sidecar", "late", nil, 8080, 8081)
	late.Annotations = map[string]string{"meshtls.io/exclude-inbound-ports": "8081"}
	create(t, late)
	injected := newPod("sidecar", "injected", nil)
	injected.Spec.InitContainers = []corev1.Container{{Name: "meshtls-proxy", Image: "registry.example/proxy:1"}}
	create(t, injected)

	eventually(t, wait, func() error {
		ppc, err := getPPC("sidecar", "late")
		if err != nil {
			return err
		}
		if ppc.Spec.Sidecar != v1alpha1.SidecarMissing || fmt.Sprint(ppc.Spec.Inbound.UncapturedPorts) != "[8081]" {
			return fmt.Errorf("late: sidecar %q uncaptured %v, want Missing [8081]", ppc.Spec.Sidecar, ppc.Spec.Inbound.UncapturedPorts)
		}
		ppc, err = getPPC("sidecar", "injected")
		if err != nil {
			return err
		}
		if ppc.Spec.Sidecar != v1alpha1.SidecarInjected {
			return fmt.Errorf("injected: sidecar %q, want Injected", ppc.Spec.Sidecar)
		}
		return nil
	})

	mesh := &v1alpha1.MeshMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.MeshMTLSPolicySpec{
		Mode: v1alpha1.ModePermissive, MinimumMode: v1alpha1.ModeDisable, TrustDomain: "cluster.local",
		IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}}}
	create(t, mesh)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), mesh) })
	eventually(t, wait, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mesh), mesh); err != nil {
			return err
		}
		// Every pod of this test package is created without a webhook, so only
		// "injected" carries a sidecar.
		if s := mesh.Status; s.MeshedPods == 0 || s.PodsWithoutSidecar != s.MeshedPods-1 {
			return fmt.Errorf("mesh status: %d meshed, %d without sidecar; want all but one without", s.MeshedPods, s.PodsWithoutSidecar)
		}
		return nil
	})
}

func TestTargetNotFoundClearsWithoutMeshedPods(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "targets", true)
	wmp := &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "targets", Name: "svc"},
		Spec: v1alpha1.WorkloadMTLSPolicySpec{Mode: v1alpha1.ModeStrict,
			TargetRefs: []gwapiv1.LocalPolicyTargetReference{{Group: "", Kind: "Service", Name: "later"}}}}
	create(t, wmp)
	expectPolicyCondition(t, wmp, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "targets", Name: "later"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nobody"}, Ports: []corev1.ServicePort{{Port: 80}}}})
	expectPolicyCondition(t, wmp, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted)

	// Zero is written, not omitted: the PODS column shows 0.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("WorkloadMTLSPolicy"))
	eventually(t, wait, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(wmp), u); err != nil {
			return err
		}
		n, found, err := unstructured.NestedInt64(u.Object, "status", "selectedPods")
		if err != nil || !found || n != 0 {
			return fmt.Errorf("status.selectedPods = %d (found %v, %v), want an explicit 0", n, found, err)
		}
		return nil
	})
}

const managedBy = "app.kubernetes.io/managed-by"

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
