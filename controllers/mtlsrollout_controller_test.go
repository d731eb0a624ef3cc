package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func TestRolloutPolicyReading(t *testing.T) {
	at := func(s int) *metav1.Time { return &metav1.Time{Time: time.Date(2026, 11, 23, 18, 0, s, 0, time.UTC)} }
	mode := &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:mode":{}}}`)}
	labels := &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:team":{}}}}`)}
	p := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{
		Annotations: map[string]string{v1alpha1.AnnotationPromotedBy: "shop", v1alpha1.AnnotationPromotedAt: "2026-11-23T18:00:00Z", v1alpha1.AnnotationPreviousMode: "PERMISSIVE"},
		ManagedFields: []metav1.ManagedFieldsEntry{
			{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, FieldsV1: labels, Time: at(9)},
			{Manager: RolloutFieldManager, Operation: metav1.ManagedFieldsOperationApply, FieldsV1: mode, Time: at(8)},
			{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: mode, Time: at(5)},
			{Manager: "kubectl-patch", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: mode, Time: at(7)},
			{Manager: "meshtls-operator", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", FieldsV1: mode, Time: at(10)},
		},
	}}
	t.Run("should name the latest writer of spec.mode other than the rollout", func(t *testing.T) {
		if got := modeWriter(p); got != "kubectl-patch" {
			t.Errorf("modeWriter = %q", got)
		}
	})
	t.Run("should read the promotion marks", func(t *testing.T) {
		m, ok := markOf(p)
		if !ok || m.By != "shop" || m.PreviousMode != v1alpha1.ModePermissive || !m.At.Equal(at(0).Time) {
			t.Errorf("mark %+v %t", m, ok)
		}
		if _, ok := markOf(&v1alpha1.NamespaceMTLSPolicy{}); ok {
			t.Error("a mark on a policy without annotations")
		}
	})
	t.Run("should see other owners of a policy, the status aside", func(t *testing.T) {
		if ownedOnlyByRollout(p) {
			t.Error("argocd-controller and kubectl own fields too")
		}
		only := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{p.ManagedFields[1], p.ManagedFields[4]}}}
		if !ownedOnlyByRollout(only) {
			t.Error("only the rollout (and the operator's status) own it")
		}
	})
}
