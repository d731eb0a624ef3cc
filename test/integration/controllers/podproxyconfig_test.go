package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

const wait = 20 * time.Second

// inbound renders a PodProxyConfig's inbound config as "STRICT 8080=DISABLE".
func inbound(ppc *v1alpha1.PodProxyConfig) string {
	s := string(ppc.Spec.Inbound.Mode)
	for _, p := range ppc.Spec.Inbound.Ports {
		s += fmt.Sprintf(" %d=%s", p.Port, p.Mode)
	}
	return s
}

func getPPC(ns, name string) (*v1alpha1.PodProxyConfig, error) {
	ppc := &v1alpha1.PodProxyConfig{}
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ppc)
	return ppc, err
}

// expectInbound waits until the pod's PodProxyConfig says want.
func expectInbound(t *testing.T, ns, pod, want string) *v1alpha1.PodProxyConfig {
	t.Helper()
	var ppc *v1alpha1.PodProxyConfig
	eventually(t, wait, func() error {
		var err error
		if ppc, err = getPPC(ns, pod); err != nil {
			return err
		}
		if got := inbound(ppc); got != want {
			return fmt.Errorf("%s/%s inbound is %q, want %q", ns, pod, got, want)
		}
		return nil
	})
	return ppc
}

// expectNoPPC waits until the pod has no PodProxyConfig, then checks it stays so.
func expectNoPPC(t *testing.T, ns, pod string) {
	t.Helper()
	eventually(t, wait, func() error {
		if _, err := getPPC(ns, pod); !apierrors.IsNotFound(err) {
			return fmt.Errorf("PodProxyConfig %s/%s still exists (err=%v)", ns, pod, err)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	if _, err := getPPC(ns, pod); !apierrors.IsNotFound(err) {
		t.Fatalf("PodProxyConfig %s/%s came back (err=%v)", ns, pod, err)
	}
}

func update[T client.Object](t *testing.T, obj T, mutate func(T)) {
	t.Helper()
	eventually(t, wait, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(context.Background(), obj)
	})
}

func TestPodProxyConfigLifecycle(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "life", true)
	create(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "life", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModeStrict}})
	pod := newPod("life", "web-0", map[string]string{"app": "web"}, 8080)
	create(t, pod)

	t.Run("a meshed pod gets a PodProxyConfig owned by it, with its identity and decision", func(t *testing.T) {
		ppc := expectInbound(t, "life", "web-0", "STRICT")
		if ppc.Spec.PodUID != pod.UID {
			t.Errorf("podUID = %s, want %s", ppc.Spec.PodUID, pod.UID)
		}
		if len(ppc.OwnerReferences) != 1 || ppc.OwnerReferences[0].UID != pod.UID || ppc.OwnerReferences[0].Kind != "Pod" {
			t.Errorf("owner references = %+v, want the pod", ppc.OwnerReferences)
		}
		if ppc.Labels["app.kubernetes.io/managed-by"] != "meshtls-operator" {
			t.Errorf("labels = %v, want the managed-by label", ppc.Labels)
		}
		if want := "spiffe://cluster.local/ns/life/sa/default"; ppc.Spec.Identity != want {
			t.Errorf("identity = %s, want %s", ppc.Spec.Identity, want)
		}
		if ppc.Spec.CertificateSecretName != "" {
			t.Errorf("without a mesh issuer there is no certificate secret, got %q", ppc.Spec.CertificateSecretName)
		}
		if len(ppc.Spec.Decision) != 1 || ppc.Spec.Decision[0].Scope != v1alpha1.ScopeNamespace {
			t.Errorf("decision = %+v, want the namespace policy", ppc.Spec.Decision)
		}
		if !strings.HasPrefix(ppc.Spec.ConfigHash, "sha256:") {
			t.Errorf("configHash = %q", ppc.Spec.ConfigHash)
		}
	})

	t.Run("a pod recreated under the same name with a new UID gets a new PodProxyConfig", func(t *testing.T) {
		before, err := getPPC("life", "web-0")
		if err != nil {
			t.Fatal(err)
		}
		if err := k8s.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		again := newPod("life", "web-0", map[string]string{"app": "web"}, 8080)
		create(t, again)
		eventually(t, wait, func() error {
			ppc, err := getPPC("life", "web-0")
			if err != nil {
				return err
			}
			if ppc.Spec.PodUID != again.UID || ppc.UID == before.UID {
				return fmt.Errorf("PodProxyConfig still for pod UID %s", ppc.Spec.PodUID)
			}
			if len(ppc.OwnerReferences) != 1 || ppc.OwnerReferences[0].UID != again.UID {
				return fmt.Errorf("owner is %+v", ppc.OwnerReferences)
			}
			return nil
		})
		pod = again
	})

	t.Run("a pod that opts out loses its PodProxyConfig, and gets it back when it opts in", func(t *testing.T) {
		update(t, pod, func(p *corev1.Pod) { p.Labels["meshtls.io/inject"] = "disabled" })
		expectNoPPC(t, "life", "web-0")
		update(t, pod, func(p *corev1.Pod) { delete(p.Labels, "meshtls.io/inject") })
		expectInbound(t, "life", "web-0", "STRICT")
	})

	t.Run("a deleted pod's PodProxyConfig is removed by the operator itself", func(t *testing.T) {
		if err := k8s.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		expectNoPPC(t, "life", "web-0")
	})

	t.Run("a stale PodProxyConfig of a pod that does not exist is removed", func(t *testing.T) {
		stale := &v1alpha1.PodProxyConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "life", Name: "ghost", Labels: map[string]string{"app.kubernetes.io/managed-by": "meshtls-operator"}},
			Spec:       v1alpha1.PodProxyConfigSpec{PodUID: "0000", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}},
		}
		create(t, stale)
		expectNoPPC(t, "life", "ghost")
	})

	t.Run("a PodProxyConfig the operator did not make is left alone", func(t *testing.T) {
		mine := &v1alpha1.PodProxyConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "life", Name: "users-own"},
			Spec:       v1alpha1.PodProxyConfigSpec{PodUID: "1111", Inbound: v1alpha1.InboundConfig{Mode: v1alpha1.ModeStrict}},
		}
		create(t, mine)
		time.Sleep(time.Second)
		if _, err := getPPC("life", "users-own"); err != nil {
			t.Fatalf("the operator removed an object it does not own: %v", err)
		}
	})

	t.Run("a PodProxyConfig spec edited by hand is put back", func(t *testing.T) {
		p := newPod("life", "web-1", map[string]string{"app": "web"})
		create(t, p)
		ppc := expectInbound(t, "life", "web-1", "STRICT")
		update(t, ppc, func(c *v1alpha1.PodProxyConfig) { c.Spec.Inbound.Mode = v1alpha1.ModeDisable })
		expectInbound(t, "life", "web-1", "STRICT")
	})
}

func TestMeshedNamespaces(t *testing.T) {
	createNamespace(t, "unmeshed", false)
	create(t, newPod("unmeshed", "a", nil))
	optIn := newPod("unmeshed", "b", map[string]string{"meshtls.io/inject": "enabled"})
	create(t, optIn)

	t.Run("a pod labelled for injection is meshed in an unlabelled namespace", func(t *testing.T) {
		expectInbound(t, "unmeshed", "b", "PERMISSIVE")
	})
	t.Run("a pod in an unlabelled namespace is not meshed", func(t *testing.T) {
		expectNoPPC(t, "unmeshed", "a")
	})

	ns := &corev1.Namespace{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: "unmeshed"}, ns); err != nil {
		t.Fatal(err)
	}
	t.Run("labelling the namespace meshes its pods", func(t *testing.T) {
		update(t, ns, func(n *corev1.Namespace) { n.Labels = map[string]string{"meshtls.io/inject": "enabled"} })
		expectInbound(t, "unmeshed", "a", "PERMISSIVE")
	})
	t.Run("removing the namespace label unmeshes them again", func(t *testing.T) {
		update(t, ns, func(n *corev1.Namespace) { delete(n.Labels, "meshtls.io/inject") })
		expectNoPPC(t, "unmeshed", "a")
		expectInbound(t, "unmeshed", "b", "PERMISSIVE")
	})
}

func TestWorkloadPolicies(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "shop", true)
	create(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModeStrict}})
	finance := newPod("shop", "finance-1", map[string]string{"app": "finance"}, 8080)
	cart := newPod("shop", "cart-1", map[string]string{"app": "cart"})
	create(t, finance)
	create(t, cart)

	byLabel := &v1alpha1.WorkloadMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "finance"},
		Spec: v1alpha1.WorkloadMTLSPolicySpec{
			Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": "finance"}},
			Mode:          v1alpha1.ModeUnset,
			PortLevelMTLS: []v1alpha1.PortMTLS{{Port: 8080, Mode: v1alpha1.ModeDisable}, {Port: 9999, Mode: v1alpha1.ModePermissive}},
		},
	}
	create(t, byLabel)

	t.Run("a port-level entry under an UNSET workload mode keeps the namespace mode elsewhere", func(t *testing.T) {
		ppc := expectInbound(t, "shop", "finance-1", "STRICT 8080=DISABLE 9999=PERMISSIVE")
		if len(ppc.Spec.Decision) != 2 || ppc.Spec.Decision[0].Name != "finance" || ppc.Spec.Decision[1].Scope != v1alpha1.ScopeNamespace {
			t.Errorf("decision = %+v", ppc.Spec.Decision)
		}
		expectInbound(t, "shop", "cart-1", "STRICT")
	})

	t.Run("the policy status counts its pods and warns of undeclared ports", func(t *testing.T) {
		eventually(t, wait, func() error {
			p := &v1alpha1.WorkloadMTLSPolicy{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(byLabel), p); err != nil {
				return err
			}
			if p.Status.SelectedPods != 1 || fmt.Sprint(p.Status.UndeclaredPorts) != "[9999]" || p.Status.ObservedGeneration != p.Generation {
				return fmt.Errorf("status = %+v", p.Status)
			}
			return expectCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, "Reconciled")
		})
	})

	t.Run("relabelling a pod moves it out of the policy", func(t *testing.T) {
		update(t, finance, func(p *corev1.Pod) { p.Labels["app"] = "ledger" })
		expectInbound(t, "shop", "finance-1", "STRICT")
		update(t, finance, func(p *corev1.Pod) { p.Labels["app"] = "finance" })
		expectInbound(t, "shop", "finance-1", "STRICT 8080=DISABLE 9999=PERMISSIVE")
	})

	byService := &v1alpha1.WorkloadMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"},
		Spec: v1alpha1.WorkloadMTLSPolicySpec{
			TargetRefs: []gwapiv1.LocalPolicyTargetReference{{Group: "", Kind: "Service", Name: "checkout"}},
			Mode:       v1alpha1.ModePermissive,
		},
	}
	create(t, byService)

	t.Run("a targetRef to a missing Service is not accepted", func(t *testing.T) {
		expectPolicyCondition(t, byService, "Accepted", metav1.ConditionFalse, "TargetNotFound")
		expectInbound(t, "shop", "cart-1", "STRICT")
	})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "cart"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	t.Run("creating the Service attaches the policy to the pods it selects", func(t *testing.T) {
		create(t, svc)
		expectInbound(t, "shop", "cart-1", "PERMISSIVE")
		expectPolicyCondition(t, byService, "Accepted", metav1.ConditionTrue, "Accepted")
	})

	t.Run("re-selecting the Service moves the policy to other pods", func(t *testing.T) {
		other := newPod("shop", "pay-1", map[string]string{"app": "pay"})
		create(t, other)
		expectInbound(t, "shop", "pay-1", "STRICT")
		update(t, svc, func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "pay"} })
		expectInbound(t, "shop", "pay-1", "PERMISSIVE")
		expectInbound(t, "shop", "cart-1", "STRICT")
	})

	t.Run("a later conflict goes to the older policy and the younger says so", func(t *testing.T) {
		// Without the admission webhook, nothing stops a conflicting policy; a
		// conflict can also arise later from a relabelled pod.
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has second precision
		younger := &v1alpha1.WorkloadMTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a-younger"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "finance"}},
				Mode:     v1alpha1.ModeDisable,
			},
		}
		create(t, younger)
		expectPolicyCondition(t, younger, "Conflicted", metav1.ConditionTrue, "Conflicted")
		p := &v1alpha1.WorkloadMTLSPolicy{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(younger), p); err != nil {
			t.Fatal(err)
		}
		msg := meta.FindStatusCondition(p.Status.Conditions, "Conflicted").Message
		if !strings.Contains(msg, "finance-1") || !strings.Contains(msg, "WorkloadMTLSPolicy finance") {
			t.Errorf("Conflicted message should name the pods and the winner: %q", msg)
		}
		if p.Status.SelectedPods != 0 {
			t.Errorf("a loser counts no pods, got %d", p.Status.SelectedPods)
		}
		expectPolicyCondition(t, byLabel, "Conflicted", metav1.ConditionFalse, "NoConflict")
		expectInbound(t, "shop", "finance-1", "STRICT 8080=DISABLE 9999=PERMISSIVE")
	})
}

func TestMeshWideChanges(t *testing.T) {
	ctx := context.Background()
	createNamespace(t, "mesh-a", true)
	createNamespace(t, "mesh-b", true)
	create(t, newPod("mesh-a", "p", nil))
	create(t, newPod("mesh-b", "q", nil))
	create(t, &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh-b", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModePermissive}})
	expectInbound(t, "mesh-a", "p", "PERMISSIVE")

	mesh := &v1alpha1.MeshMTLSPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.MeshMTLSPolicySpec{
			Mode: v1alpha1.ModeStrict, MinimumMode: v1alpha1.ModeDisable, TrustDomain: "prod.example",
			IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
		},
	}
	create(t, mesh)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), mesh) })

	t.Run("a mesh-wide flip reaches every pod that inherits it", func(t *testing.T) {
		ppc := expectInbound(t, "mesh-a", "p", "STRICT")
		if ppc.Spec.Identity != "spiffe://prod.example/ns/mesh-a/sa/default" || ppc.Spec.CertificateSecretName != "meshtls-default-tls" {
			t.Errorf("identity %q, secret %q", ppc.Spec.Identity, ppc.Spec.CertificateSecretName)
		}
		expectInbound(t, "mesh-b", "q", "PERMISSIVE")
	})

	t.Run("raising the floor raises a weaker namespace and says so", func(t *testing.T) {
		update(t, mesh, func(m *v1alpha1.MeshMTLSPolicy) { m.Spec.MinimumMode = v1alpha1.ModeStrict })
		expectInbound(t, "mesh-b", "q", "STRICT")
		nmp := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh-b", Name: "default"}}
		expectPolicyCondition(t, nmp, "MinimumModeApplied", metav1.ConditionTrue, "BelowMinimumMode")
		expectPolicyCondition(t, nmp, "Accepted", metav1.ConditionTrue, "Accepted")
		eventually(t, wait, func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(nmp), nmp); err != nil {
				return err
			}
			if nmp.Status.EffectiveMode != v1alpha1.ModeStrict {
				return fmt.Errorf("effectiveMode = %s", nmp.Status.EffectiveMode)
			}
			return nil
		})
	})

	t.Run("the mesh status counts meshed pods by mode", func(t *testing.T) {
		eventually(t, wait, func() error {
			m := &v1alpha1.MeshMTLSPolicy{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(mesh), m); err != nil {
				return err
			}
			if m.Status.PodsByMode == nil || m.Status.MeshedPods < 2 || m.Status.PodsByMode.Strict != m.Status.MeshedPods {
				return fmt.Errorf("status = %+v", m.Status)
			}
			return expectCondition(m.Status.Conditions, "Ready", metav1.ConditionTrue, "Reconciled")
		})
	})

	t.Run("deleting the mesh policy falls back to PERMISSIVE without an issuer", func(t *testing.T) {
		update(t, mesh, func(m *v1alpha1.MeshMTLSPolicy) { m.Spec.MinimumMode = v1alpha1.ModeDisable })
		if err := k8s.Delete(ctx, mesh); err != nil {
			t.Fatal(err)
		}
		ppc := expectInbound(t, "mesh-a", "p", "PERMISSIVE")
		if ppc.Spec.CertificateSecretName != "" {
			t.Errorf("no issuer, no certificate secret; got %q", ppc.Spec.CertificateSecretName)
		}
		expectInbound(t, "mesh-b", "q", "PERMISSIVE")
	})
}

func expectCondition(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Errorf("%s=%s (%s: %s), want %s (%s)", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

func expectPolicyCondition(t *testing.T, obj client.Object, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, wait, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		switch p := obj.(type) {
		case *v1alpha1.WorkloadMTLSPolicy:
			conds = p.Status.Conditions
		case *v1alpha1.NamespaceMTLSPolicy:
			conds = p.Status.Conditions
		}
		return expectCondition(conds, typ, status, reason)
	})
}
