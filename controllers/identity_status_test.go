package controllers

import (
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

func TestIdentityLabelsMatch(t *testing.T) {
	if identity.ManagedByLabel != ManagedByLabel || identity.ManagedByValue != ManagedByValue {
		t.Fatal("package identity and package controllers disagree on the managed-by label")
	}
}

func TestSetIdentityStatus(t *testing.T) {
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconciled, Message: "3 meshed pods"}
	issuerOK := conditionValue{metav1.ConditionTrue, v1alpha1.ReasonIssuerReady, "ClusterIssuer mesh-ca is Ready"}
	bundleOK := conditionValue{metav1.ConditionTrue, v1alpha1.ReasonTrustBundleDistributed, "in all"}
	tests := map[string]struct {
		obs         identityObservation
		wantReady   metav1.ConditionStatus
		wantReason  string
		wantIssuer  metav1.ConditionStatus
		wantCounted int32
	}{
		"should keep Ready when the issuer and the bundle are fine": {
			obs:       identityObservation{issuer: issuerOK, bundle: bundleOK, counts: v1alpha1.CertificateCounts{Ready: 3}},
			wantReady: metav1.ConditionTrue, wantReason: v1alpha1.ReasonReconciled, wantIssuer: metav1.ConditionTrue, wantCounted: 3,
		},
		"should keep Ready but say IssuerReady=False when the issuer is missing": {
			obs:       identityObservation{issuer: conditionValue{metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, "no"}, bundle: bundleOK},
			wantReady: metav1.ConditionTrue, wantReason: v1alpha1.ReasonReconciled, wantIssuer: metav1.ConditionFalse,
		},
		"should say IssuerReady=Unknown for an external issuer": {
			obs:       identityObservation{issuer: conditionValue{metav1.ConditionUnknown, v1alpha1.ReasonExternalIssuer, "cannot judge"}, bundle: bundleOK},
			wantReady: metav1.ConditionTrue, wantReason: v1alpha1.ReasonReconciled, wantIssuer: metav1.ConditionUnknown,
		},
		"should turn Ready False when objects under the operator's names are someone else's": {
			obs:       identityObservation{issuer: issuerOK, bundle: bundleOK, notOwned: []string{"RoleBinding shop/meshtls-proxy"}},
			wantReady: metav1.ConditionFalse, wantReason: v1alpha1.ReasonNotOwned, wantIssuer: metav1.ConditionTrue,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := v1alpha1.MeshMTLSPolicyStatus{Conditions: []metav1.Condition{ready}}
			setIdentityStatus(&st, 4, tc.obs)
			r := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if r.Status != tc.wantReady || r.Reason != tc.wantReason {
				t.Fatalf("Ready=%s (%s), want %s (%s)", r.Status, r.Reason, tc.wantReady, tc.wantReason)
			}
			if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionIssuerReady); c == nil || c.Status != tc.wantIssuer || c.ObservedGeneration != 4 {
				t.Fatalf("IssuerReady %+v, want %s", c, tc.wantIssuer)
			}
			if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionTrustBundleReady); c == nil {
				t.Fatal("no TrustBundleReady")
			}
			if st.Certificates == nil || st.Certificates.Ready != tc.wantCounted {
				t.Fatalf("certificates %+v", st.Certificates)
			}
		})
	}
}

func TestTrimCertificate(t *testing.T) {
	ours := identity.Certificate(v1alpha1.MeshMTLSPolicySpec{IssuerRef: v1alpha1.IssuerReference{Name: "ca"}}, "shop", "app")
	ours.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	got, _ := trimCertificate(ours.DeepCopy())
	if c := got.(*cmapi.Certificate); c.ManagedFields != nil || len(c.Spec.URIs) != 1 {
		t.Fatalf("the operator's Certificate must keep its spec and lose managed fields: %+v", c)
	}
	foreign := ours.DeepCopy()
	foreign.Labels = map[string]string{"team": "x"}
	got, _ = trimCertificate(foreign)
	if c := got.(*cmapi.Certificate); len(c.Spec.URIs) != 0 || c.Name != "meshtls-app" || c.Labels["team"] != "x" {
		t.Fatalf("someone else's Certificate must keep only its metadata: %+v", c)
	}
}

func TestTrimCertificateRequest(t *testing.T) {
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Annotations: map[string]string{"a": "b"}},
		Spec:       cmapi.CertificateRequestSpec{Request: []byte("csr"), IssuerRef: cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}},
		Status:     cmapi.CertificateRequestStatus{CA: []byte("ca"), Certificate: []byte("chain")},
	}
	got, _ := trimCertificateRequest(cr)
	c := got.(*cmapi.CertificateRequest)
	// The issuerRef decides whether the CA may be trusted: it must stay.
	if c.Spec.Request != nil || c.Status.Certificate != nil || c.Annotations != nil || string(c.Status.CA) != "ca" ||
		c.Spec.IssuerRef != (cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}) {
		t.Fatalf("trimmed request %+v", c)
	}
}
