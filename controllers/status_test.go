package controllers

import (
	"context"
	"os"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// TestStatusConflictIsRetried writes a status from a stale copy of a policy, as a
// reconciler working from its cache does after someone edited the policy's labels: the
// API server answers Conflict, and the write must be retried against the live object,
// not dropped (no watch of ours fires for a label edit).
func TestStatusConflictIsRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx := context.Background()
	env, err := testenv.Start(ctx, testenv.Options{Progress: os.Stderr, NoControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := env.Client

	p := &v1alpha1.NamespaceMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}, Spec: v1alpha1.NamespaceMTLSPolicySpec{Mode: v1alpha1.ModeStrict}}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	stale := p.DeepCopy()
	p.Labels = map[string]string{"edited": "by-someone"}
	if err := c.Update(ctx, p); err != nil {
		t.Fatal(err)
	}

	want := v1alpha1.NamespaceMTLSPolicyStatus{EffectiveMode: v1alpha1.ModeStrict, SelectedPods: 3}
	err = writeStatus(ctx, c, c, nil, stale, &stale.Status,
		func() v1alpha1.NamespaceMTLSPolicyStatus {
			w := want
			w.ObservedGeneration = stale.Generation
			return w
		},
		func(s *v1alpha1.NamespaceMTLSPolicyStatus) []metav1.Condition { return s.Conditions })
	if err != nil {
		t.Fatalf("the write must succeed after a retry: %v", err)
	}
	got := &v1alpha1.NamespaceMTLSPolicy{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.SelectedPods != 3 || got.Status.EffectiveMode != v1alpha1.ModeStrict {
		t.Errorf("status after the conflict = %+v, want the write to have landed", got.Status)
	}
	if got.Labels["edited"] != "by-someone" {
		t.Error("the retry must not undo the concurrent edit")
	}
}
