package rollout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Cases of the review of MTLSRollout, on the real API server with the manager.

func TestRolloutAdmissionAlwaysLetsARolloutBePaused(t *testing.T) {
	ctx := context.Background()
	startManager(t)
	for _, ns := range []string{"pause-x", "pause-y"} {
		must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	// Two rollouts that did not overlap when they were created.
	a := newRollout("pause-a", map[string]string{"pause-team": "shop"}, true)
	b := newRollout("pause-b", map[string]string{"pause-env": "prod"}, true)
	for _, ro := range []*v1alpha1.MTLSRollout{a, b} {
		eventually(t, 30*time.Second, "create "+ro.Name, func() error { return ignoreExists(k8s.Create(ctx, ro)) })
	}
	// Both unfinished (Paused) before the namespace comes to be selected by both.
	for _, name := range []string{"pause-a", "pause-b"} {
		expectPhase(t, name, v1alpha1.RolloutPending)
	}
	label := func(ns string, l map[string]string) {
		eventually(t, 10*time.Second, "label "+ns, func() error {
			n := &corev1.Namespace{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, n); err != nil {
				return err
			}
			n.Labels = l
			return k8s.Update(ctx, n)
		})
	}
	label("pause-x", map[string]string{"pause-team": "shop", "pause-env": "prod"})

	update := func(f func(*v1alpha1.MTLSRollout)) error {
		var err error
		for range 20 {
			ro := getRollout(t, "pause-a")
			f(ro)
			if err = k8s.Update(ctx, ro); !apierrors.IsConflict(err) {
				return err
			}
		}
		return err
	}
	t.Run("should accept a pause, and every edit that keeps the selector, though the rollout overlaps another now", func(t *testing.T) {
		if err := update(func(ro *v1alpha1.MTLSRollout) { ro.Spec.Paused = false }); err != nil {
			t.Fatalf("resuming refused: %v", err)
		}
		if err := update(func(ro *v1alpha1.MTLSRollout) { ro.Spec.Paused = true }); err != nil {
			t.Fatalf("pausing refused: %v", err)
		}
		if err := update(func(ro *v1alpha1.MTLSRollout) {
			ro.Spec.SoakDuration = &metav1.Duration{Duration: 7 * time.Second}
			ro.Spec.MaxConcurrent = 2
			ro.Spec.PlaintextWindow = &metav1.Duration{Duration: 6 * time.Second}
			ro.Spec.RollbackOnFailure = new(bool)
		}); err != nil {
			t.Fatalf("editing soakDuration, maxConcurrent, plaintextWindow, rollbackOnFailure refused: %v", err)
		}
	})
	t.Run("should refuse a new selector that overlaps another unfinished rollout where the old one did not", func(t *testing.T) {
		label("pause-y", map[string]string{"pause-env": "prod", "pause-extra": "yes"})
		err := update(func(ro *v1alpha1.MTLSRollout) {
			ro.Spec.NamespaceSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pause-env", Operator: metav1.LabelSelectorOpExists}}}
		})
		if err == nil || !strings.Contains(err.Error(), `MTLSRollout "pause-b"`) || !strings.Contains(err.Error(), "pause-y") || strings.Contains(err.Error(), "pause-x") {
			t.Fatalf("want the change refused for pause-y only, got %v", err)
		}
	})
}

// applyPolicy applies spec.mode (none when mode is "") of the namespace's policy as
// manager, as Argo CD or kubectl apply --server-side do.
func applyPolicy(t *testing.T, ns, manager, mode string, force bool) error {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("NamespaceMTLSPolicy")
	u.SetNamespace(ns)
	u.SetName("default")
	if mode != "" {
		if err := unstructured.SetNestedField(u.Object, mode, "spec", "mode"); err != nil {
			t.Fatal(err)
		}
	}
	opts := []client.ApplyOption{client.FieldOwner(manager)}
	if force {
		opts = append(opts, client.ForceOwnership)
	}
	return k8s.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), opts...)
}

// docs/rollout.md, "Handing spec.mode back to Git": what the recipe says works.
func TestRolloutHandBackToGit(t *testing.T) {
	startManager(t)
	must(t, k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "handback"}}))
	set := func() {
		t.Helper()
		eventually(t, 30*time.Second, "Git applies PERMISSIVE", func() error { return applyPolicy(t, "handback", "argocd-controller", "PERMISSIVE", true) })
		if err := applyPolicy(t, "handback", "meshtls-rollout", "STRICT", true); err != nil { // the promotion
			t.Fatal(err)
		}
	}
	t.Run("should share spec.mode, not give it back, when Git applies the same value", func(t *testing.T) {
		set()
		if err := applyPolicy(t, "handback", "argocd-controller", "STRICT", false); err != nil {
			t.Fatal(err)
		}
		mode, owners := policyMode(t, "handback")
		if mode != v1alpha1.ModeStrict || !slices.Contains(owners, "meshtls-rollout/Apply") || !slices.Contains(owners, "argocd-controller/Apply") {
			t.Fatalf("spec.mode %s owned by %v, want shared by both", mode, owners)
		}
	})
	t.Run("should give spec.mode to Git alone when meshtls-rollout applies the object without it", func(t *testing.T) {
		if err := applyPolicy(t, "handback", "meshtls-rollout", "", false); err != nil {
			t.Fatal(err)
		}
		mode, owners := policyMode(t, "handback")
		if mode != v1alpha1.ModeStrict || !slices.Equal(owners, []string{"argocd-controller/Apply"}) {
			t.Fatalf("spec.mode %s owned by %v, want STRICT owned by argocd-controller alone", mode, owners)
		}
	})
	t.Run("should give spec.mode to Git alone with a forced apply of another value", func(t *testing.T) {
		set()
		if err := applyPolicy(t, "handback", "argocd-controller", "PERMISSIVE", false); err == nil || !apierrors.IsConflict(err) {
			t.Fatalf("want a conflict with meshtls-rollout without --force-conflicts, got %v", err)
		}
		if err := applyPolicy(t, "handback", "argocd-controller", "PERMISSIVE", true); err != nil {
			t.Fatal(err)
		}
		if mode, owners := policyMode(t, "handback"); mode != v1alpha1.ModePermissive || !slices.Equal(owners, []string{"argocd-controller/Apply"}) {
			t.Fatalf("after a forced apply of another value: spec.mode %s owned by %v, want Git's alone", mode, owners)
		}
	})
	t.Run("should only share spec.mode with a forced apply of the same value", func(t *testing.T) {
		set()
		if err := applyPolicy(t, "handback", "argocd-controller", "STRICT", true); err != nil {
			t.Fatal(err)
		}
		// There is no conflict to force: the rollout keeps its share, and the step that
		// always works is its apply without spec.mode.
		if mode, owners := policyMode(t, "handback"); !slices.Contains(owners, "meshtls-rollout/Apply") || !slices.Contains(owners, "argocd-controller/Apply") {
			t.Fatalf("spec.mode %s owned by %v, want shared", mode, owners)
		}
	})
}

func TestRolloutRollbackDeletesThePolicyItCreated(t *testing.T) {
	startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "created"}
	meshedNamespace(t, ps, "created-a", labels, "", 1)
	ps.run(t)
	eventually(t, 30*time.Second, "create the rollout", func() error {
		return ignoreExists(k8s.Create(context.Background(), newRollout("created", labels, false)))
	})
	expectNamespace(t, "created", "created-a", v1alpha1.NamespaceSoaking, "")
	if e := nsStatus(getRollout(t, "created"), "created-a"); !e.CreatedPolicy || e.PreviousMode != v1alpha1.ModeUnset {
		t.Fatalf("createdPolicy not recorded: %+v", e)
	}
	t.Run("should mark the policy it promoted until the namespace soaked", func(t *testing.T) {
		p := &v1alpha1.NamespaceMTLSPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "created-a", Name: "default"}, p); err != nil {
			t.Fatal(err)
		}
		if p.Annotations[v1alpha1.AnnotationPromotedBy] != "created" || p.Annotations[v1alpha1.AnnotationPreviousMode] != "UNSET" || p.Annotations[v1alpha1.AnnotationPromotedAt] == "" {
			t.Errorf("annotations %v", p.Annotations)
		}
	})
	ps.get("created-a", "web-0").set(func(p *proxy) { p.rejected = 1 })
	t.Run("should delete the policy it created on rollback, and end RolledBack", func(t *testing.T) {
		expectNamespace(t, "created", "created-a", v1alpha1.NamespaceRolledBack, "the NamespaceMTLSPolicy the rollout created is deleted")
		eventually(t, wait, "the policy is deleted", func() error {
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "created-a", Name: "default"}, &v1alpha1.NamespaceMTLSPolicy{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
		ro := expectPhase(t, "created", v1alpha1.RolloutRolledBack)
		if e := nsStatus(ro, "created-a"); e.RolledBackAt == nil {
			t.Errorf("the successful rollback write is not recorded: %+v", e)
		}
	})
}

func TestRolloutRecreatedMidSoakResumesTheSoak(t *testing.T) {
	ctx := context.Background()
	startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "again"}
	meshedNamespace(t, ps, "again-a", labels, v1alpha1.ModePermissive, 1)
	ps.run(t)
	long := func() *v1alpha1.MTLSRollout {
		ro := newRollout("again", labels, false)
		ro.Spec.SoakDuration = &metav1.Duration{Duration: time.Minute}
		return ro
	}
	eventually(t, 30*time.Second, "create the rollout", func() error { return ignoreExists(k8s.Create(ctx, long())) })
	expectNamespace(t, "again", "again-a", v1alpha1.NamespaceSoaking, "soaking")
	must(t, k8s.Delete(ctx, getRollout(t, "again")))
	eventually(t, 10*time.Second, "the rollout is gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "again"}, &v1alpha1.MTLSRollout{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	eventually(t, 30*time.Second, "create it again", func() error { return ignoreExists(k8s.Create(ctx, long())) })
	t.Run("should resume the soak, with the previous mode, instead of skipping the namespace as already STRICT", func(t *testing.T) {
		expectNamespace(t, "again", "again-a", v1alpha1.NamespaceSoaking, "promoted by MTLSRollout again at")
		if e := nsStatus(getRollout(t, "again"), "again-a"); e.PreviousMode != v1alpha1.ModePermissive {
			t.Errorf("previousMode %q", e.PreviousMode)
		}
	})
	t.Run("should roll it back to that mode when plaintext is rejected, and remove the marks", func(t *testing.T) {
		ps.get("again-a", "web-0").set(func(p *proxy) { p.rejected = 2 })
		expectPhase(t, "again", v1alpha1.RolloutRolledBack)
		eventually(t, wait, "PERMISSIVE again, unmarked", func() error {
			p := &v1alpha1.NamespaceMTLSPolicy{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: "again-a", Name: "default"}, p); err != nil {
				return err
			}
			if p.Spec.Mode != v1alpha1.ModePermissive || p.Annotations[v1alpha1.AnnotationPromotedBy] != "" {
				return fmt.Errorf("mode %s, annotations %v", p.Spec.Mode, p.Annotations)
			}
			return nil
		})
	})
}

func TestRolloutProgressDeadlineAndContestedMode(t *testing.T) {
	ctx := context.Background()
	startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "deadline"}
	meshedNamespace(t, ps, "deadline-a", labels, v1alpha1.ModePermissive, 1)
	ps.get("deadline-a", "web-0").set(func(p *proxy) { p.hold = true })
	ps.run(t)
	ro := newRollout("deadline", labels, false)
	ro.Spec.ProgressDeadline = &metav1.Duration{Duration: 3 * time.Second}
	ro.Spec.SoakDuration = &metav1.Duration{Duration: time.Minute}
	eventually(t, 30*time.Second, "create the rollout", func() error { return ignoreExists(k8s.Create(ctx, ro)) })

	t.Run("should set Stalled NamespaceNotReady naming the namespace and its pods past progressDeadline, and keep waiting", func(t *testing.T) {
		eventually(t, wait, "Stalled", func() error {
			ro := getRollout(t, "deadline")
			c := condition(ro, v1alpha1.ConditionStalled)
			if c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.RolloutReasonNamespaceNotReady || ro.Status.Phase != v1alpha1.RolloutProgressing ||
				!strings.Contains(c.Message, "namespace deadline-a has been waiting for") || !strings.Contains(c.Message, "web-0") {
				return fmt.Errorf("phase %s, Stalled %+v", ro.Status.Phase, c)
			}
			return nil
		})
	})
	ps.get("deadline-a", "web-0").set(func(p *proxy) { p.hold = false })
	t.Run("should clear Stalled when the namespace moves", func(t *testing.T) {
		expectNamespace(t, "deadline", "deadline-a", v1alpha1.NamespaceSoaking, "soaking")
		if c := condition(getRollout(t, "deadline"), v1alpha1.ConditionStalled); c.Status != metav1.ConditionFalse {
			t.Errorf("Stalled = %+v", c)
		}
	})

	t.Run("should fail the namespace ModeContested, naming the writer, when spec.mode is changed a fourth time during the soak", func(t *testing.T) {
		for i := 1; i <= 4; i++ {
			eventually(t, wait, fmt.Sprintf("soaking before change %d", i), func() error {
				e := nsStatus(getRollout(t, "deadline"), "deadline-a")
				if e.State != v1alpha1.NamespaceSoaking || e.SoakRestarts != int32(i-1) {
					return fmt.Errorf("%s after %d restarts: %s", e.State, e.SoakRestarts, e.Message)
				}
				return nil
			})
			eventually(t, 10*time.Second, "the team sets PERMISSIVE", func() error {
				p := &v1alpha1.NamespaceMTLSPolicy{}
				if err := k8s.Get(ctx, client.ObjectKey{Namespace: "deadline-a", Name: "default"}, p); err != nil {
					return err
				}
				p.Spec.Mode = v1alpha1.ModePermissive
				return k8s.Update(ctx, p, client.FieldOwner("team-edit"))
			})
		}
		ro := expectPhase(t, "deadline", v1alpha1.RolloutFailed)
		e := nsStatus(ro, "deadline-a")
		if e.State != v1alpha1.NamespaceFailed || e.Reason != v1alpha1.RolloutReasonModeContested || !strings.Contains(e.Message, "last by field manager team-edit") {
			t.Errorf("deadline-a: %+v", e)
		}
	})
}

func TestRolloutSaysWhichPodsAWorkloadPolicyKeepsWeaker(t *testing.T) {
	ctx := context.Background()
	startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "legacy"}
	meshedNamespace(t, ps, "legacy-a", labels, v1alpha1.ModePermissive, 2)
	eventually(t, 30*time.Second, "create WorkloadMTLSPolicy legacy", func() error {
		return ignoreExists(k8s.Create(ctx, &v1alpha1.WorkloadMTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy-a", Name: "legacy"},
			Spec: v1alpha1.WorkloadMTLSPolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Mode: v1alpha1.ModePermissive}}))
	})
	ps.run(t)
	eventually(t, 30*time.Second, "the workload policy decides the pods", func() error {
		ppc := &v1alpha1.PodProxyConfig{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "legacy-a", Name: "web-1"}, ppc); err != nil {
			return err
		}
		for _, d := range ppc.Spec.Decision {
			if d.Scope == v1alpha1.ScopeWorkload && d.Name == "legacy" {
				return nil
			}
		}
		return fmt.Errorf("decision %+v", ppc.Spec.Decision)
	})
	eventually(t, 30*time.Second, "create the rollout", func() error { return ignoreExists(k8s.Create(ctx, newRollout("legacy", labels, false))) })
	t.Run("should end Succeeded without calling the namespace STRICT, naming the policy and its pods", func(t *testing.T) {
		ro := expectPhase(t, "legacy", v1alpha1.RolloutSucceeded)
		e := nsStatus(ro, "legacy-a")
		if !strings.Contains(e.Message, "STRICT except 2 pods kept PERMISSIVE by WorkloadMTLSPolicy legacy") || e.Reason != "WorkloadExceptions" {
			t.Errorf("legacy-a: %+v", e)
		}
		if c := condition(ro, v1alpha1.ConditionReady); strings.Contains(c.Message, "every selected namespace is STRICT") || !strings.Contains(c.Message, "WorkloadMTLSPolicies keep some pods weaker") {
			t.Errorf("Ready = %+v", c)
		}
	})
}
