package api

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// TestDefaults creates each kind with as little as the schema allows and checks that
// the API server filled in the documented defaults (they live in the schema, so
// GitOps tools see no drift).
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	const ns = "defaults"
	ensureNamespace(t, ns)

	create := func(t *testing.T, obj client.Object) {
		t.Helper()
		if err := k8sClient().Create(ctx, obj); err != nil {
			t.Fatalf("failed to create %T %s: %v", obj, obj.GetName(), err)
		}
		t.Cleanup(func() { _ = k8sClient().Delete(context.Background(), obj) })
	}

	t.Run("MeshMTLSPolicy", func(t *testing.T) {
		mesh := &securityv1alpha1.MeshMTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec:       securityv1alpha1.MeshMTLSPolicySpec{IssuerRef: securityv1alpha1.IssuerReference{Name: "mesh-ca"}},
		}
		// The typed client would send the zero values of non-pointer structs; send
		// only what a user writes.
		create(t, object(t, "kind: MeshMTLSPolicy\nmetadata: {name: default}\nspec: {issuerRef: {name: mesh-ca}}"))
		if err := k8sClient().Get(ctx, client.ObjectKeyFromObject(mesh), mesh); err != nil {
			t.Fatal(err)
		}
		s := mesh.Spec
		checkEqual(t, "spec.mode", s.Mode, securityv1alpha1.ModePermissive)
		checkEqual(t, "spec.minimumMode", s.MinimumMode, securityv1alpha1.ModeDisable)
		checkEqual(t, "spec.trustDomain", s.TrustDomain, "cluster.local")
		checkEqual(t, "spec.issuerRef.kind", s.IssuerRef.Kind, "ClusterIssuer")
		checkEqual(t, "spec.issuerRef.group", s.IssuerRef.Group, "cert-manager.io")
		if s.Certificate.Duration == nil || s.Certificate.RenewBefore == nil {
			t.Fatalf("spec.certificate durations not defaulted: %+v", s.Certificate)
		}
		checkEqual(t, "spec.certificate.duration", s.Certificate.Duration.Duration, 24*time.Hour)
		checkEqual(t, "spec.certificate.renewBefore", s.Certificate.RenewBefore.Duration, 8*time.Hour)
		checkEqual(t, "spec.certificate.privateKey.algorithm", s.Certificate.PrivateKey.Algorithm, securityv1alpha1.ECDSAKeyAlgorithm)
		checkEqual(t, "spec.certificate.privateKey.size", s.Certificate.PrivateKey.Size, int32(256))
	})

	t.Run("NamespaceMTLSPolicy", func(t *testing.T) {
		create(t, object(t, "kind: NamespaceMTLSPolicy\nmetadata: {name: default, namespace: defaults}"))
		got := &securityv1alpha1.NamespaceMTLSPolicy{}
		if err := k8sClient().Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, got); err != nil {
			t.Fatal(err)
		}
		checkEqual(t, "spec.mode", got.Spec.Mode, securityv1alpha1.ModeUnset)
	})

	t.Run("WorkloadMTLSPolicy", func(t *testing.T) {
		create(t, object(t, "kind: WorkloadMTLSPolicy\nmetadata: {name: finance, namespace: defaults}\nspec: {selector: {matchLabels: {app: finance}}}"))
		got := &securityv1alpha1.WorkloadMTLSPolicy{}
		if err := k8sClient().Get(ctx, client.ObjectKey{Namespace: ns, Name: "finance"}, got); err != nil {
			t.Fatal(err)
		}
		checkEqual(t, "spec.mode", got.Spec.Mode, securityv1alpha1.ModeUnset)
	})

	t.Run("MTLSRollout", func(t *testing.T) {
		create(t, object(t, "kind: MTLSRollout\nmetadata: {name: defaults}\nspec: {namespaceSelector: {matchLabels: {team: shop}}}"))
		got := &securityv1alpha1.MTLSRollout{}
		if err := k8sClient().Get(ctx, client.ObjectKey{Name: "defaults"}, got); err != nil {
			t.Fatal(err)
		}
		s := got.Spec
		checkEqual(t, "spec.targetMode", s.TargetMode, securityv1alpha1.ModeStrict)
		checkEqual(t, "spec.maxConcurrent", s.MaxConcurrent, int32(1))
		if s.SoakDuration == nil || s.PlaintextWindow == nil || s.RollbackOnFailure == nil {
			t.Fatalf("rollout defaults missing: %+v", s)
		}
		checkEqual(t, "spec.soakDuration", s.SoakDuration.Duration, 5*time.Minute)
		checkEqual(t, "spec.plaintextWindow", s.PlaintextWindow.Duration, 10*time.Minute)
		checkEqual(t, "spec.rollbackOnFailure", *s.RollbackOnFailure, true)
		checkEqual(t, "spec.paused", s.Paused, false)
	})
}

func checkEqual[T comparable](t *testing.T, field string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want the default %v", field, got, want)
	}
}
