package rollout

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// The cases of the review of MTLSRollout: each one failed before its fix.

func created(ago time.Duration) podOpt { return func(p *Pod) { p.Created = t0.Add(-ago) } }
func reported(ago time.Duration) podOpt {
	return func(p *Pod) { p.ReportedAt = t0.Add(-ago) }
}
func keptBy(m v1alpha1.Mode, policy string) podOpt {
	return func(p *Pod) {
		p.WorkloadDecides, p.NamespaceMode, p.WorkloadMode, p.WorkloadPolicy = true, unset, m, policy
	}
}

func stalled(s v1alpha1.MTLSRolloutStatus) *metav1.Condition {
	return meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled)
}

func nsEntry(t *testing.T, s v1alpha1.MTLSRolloutStatus, name string) v1alpha1.NamespaceRolloutStatus {
	t.Helper()
	for _, e := range s.Namespaces {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no entry for %s in %s", name, renderNS(s.Namespaces))
	return v1alpha1.NamespaceRolloutStatus{}
}

func contains(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s: got %q, want it to contain %q", what, got, want)
	}
}

func TestReviewYoungPods(t *testing.T) {
	spec := baseSpec() // plaintextWindow 10m
	obsWith := func(ps ...Pod) Observation {
		return Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"a": pods(ps...)}}
	}
	t.Run("should not promote pods that have not been watched for plaintextWindow, and say what it waits for", func(t *testing.T) {
		r := Step(spec, v1alpha1.MTLSRolloutStatus{}, obsWith(pod("a-new-0", created(2*time.Minute), reported(time.Minute)), pod("a-new-1", created(time.Minute))), t0)
		if len(r.Actions) > 0 {
			t.Fatalf("promoted pods that exist for 2m of a 10m window: %v", r.Actions)
		}
		e := nsEntry(t, r.Status, "a")
		contains(t, "message", e.Message, "pod a-new-1 started 1m ago: watching for plaintext for 9m more (2 pods not watched for 10m yet)")
		if want := t0.Add(9*time.Minute + time.Minute); !r.RequeueAt.Equal(want) {
			// 9m to the end of its window, plus the report interval it may take to report.
			t.Errorf("requeue at %v, want %v", r.RequeueAt, want)
		}
	})
	t.Run("should wait for a report after the window, or for the proxy's report interval", func(t *testing.T) {
		r := Step(spec, v1alpha1.MTLSRolloutStatus{}, obsWith(pod("a-0", created(10*time.Minute+20*time.Second), reported(9*time.Minute))), t0)
		if len(r.Actions) > 0 {
			t.Fatalf("promoted a pod whose proxy has not reported since its window ended: %v", r.Actions)
		}
		contains(t, "message", nsEntry(t, r.Status, "a").Message, "its plaintext window ended 20s ago; waiting up to 40s more for its proxy's next report")
		r = Step(spec, v1alpha1.MTLSRolloutStatus{}, obsWith(pod("a-0", created(10*time.Minute+20*time.Second), reported(10*time.Second))), t0)
		if renderActions(r.Actions) != "Promote a to STRICT" {
			t.Errorf("a report after the window should let it promote: %v %s", r.Actions, nsEntry(t, r.Status, "a").Message)
		}
		r = Step(spec, v1alpha1.MTLSRolloutStatus{}, obsWith(pod("a-0", created(11*time.Minute), reported(time.Hour))), t0)
		if renderActions(r.Actions) != "Promote a to STRICT" {
			t.Errorf("a quiet proxy should count as watched one report interval after its window: %v %s", r.Actions, nsEntry(t, r.Status, "a").Message)
		}
	})
	t.Run("should remember the last plaintext of the namespace when the pod that saw it is deleted", func(t *testing.T) {
		r := Step(spec, v1alpha1.MTLSRolloutStatus{}, obsWith(pod("a-0", plaintext(2*time.Minute, "")), pod("a-1")), t0)
		e := nsEntry(t, r.Status, "a")
		if e.LastPlaintextTime == nil || !e.LastPlaintextTime.Equal(&metav1.Time{Time: t0.Add(-2 * time.Minute)}) || e.LastPlaintextPod != "a-0" {
			t.Fatalf("lastPlaintext not recorded: %+v", e)
		}
		// a-0 is deleted; a-1 never saw plaintext.
		r = Step(spec, r.Status, obsWith(pod("a-1")), t0.Add(time.Minute))
		if len(r.Actions) > 0 {
			t.Fatalf("deleting the pod erased the evidence: %v", r.Actions)
		}
		contains(t, "message", nsEntry(t, r.Status, "a").Message, "plaintext seen 3m ago on pod a-0; promotion needs 10m without plaintext, 7m left")
		r = Step(spec, r.Status, obsWith(pod("a-1")), t0.Add(8*time.Minute))
		if renderActions(r.Actions) != "Promote a to STRICT" {
			t.Errorf("after the window it should promote: %v", r.Actions)
		}
	})
}

func TestReviewRolledBackNeverStuck(t *testing.T) {
	spec := baseSpec()
	base := func(a v1alpha1.NamespaceRolloutStatus) v1alpha1.MTLSRolloutStatus {
		return v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: []v1alpha1.NamespaceRolloutStatus{a, entry("b", v1alpha1.NamespaceSucceeded, prev(permissive))}}
	}
	t.Run("should end RolledBack when the rolled-back namespace is no longer selected", func(t *testing.T) {
		r := Step(spec, base(entry("a", v1alpha1.NamespaceRolledBack, prev(permissive))),
			Observation{Selected: []string{"b"}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": strict}}, t0)
		if r.Status.Phase != v1alpha1.RolloutRolledBack || len(r.Actions) > 0 {
			t.Errorf("phase %s, actions %v: want RolledBack and nothing to do", r.Status.Phase, r.Actions)
		}
	})
	t.Run("should end RolledBack once the rollback write succeeded, whatever spec.mode is since", func(t *testing.T) {
		a := entry("a", v1alpha1.NamespaceRolledBack, prev(permissive))
		a.RolledBackAt = &metav1.Time{Time: t0.Add(-time.Minute)}
		r := Step(spec, base(a), Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": strict}}, t0)
		if r.Status.Phase != v1alpha1.RolloutRolledBack || len(r.Actions) > 0 {
			t.Errorf("phase %s, actions %v: want RolledBack and nothing to do", r.Status.Phase, r.Actions)
		}
	})
	t.Run("should count a rollback the mesh floor forbids as done, and say the floor wins", func(t *testing.T) {
		r := Step(spec, base(entry("a", v1alpha1.NamespaceRolledBack, prev(permissive))),
			Observation{Selected: []string{"a", "b"}, Mesh: Mesh{Mode: permissive, MinimumMode: strict}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": strict}}, t0)
		if r.Status.Phase != v1alpha1.RolloutRolledBack || len(r.Actions) > 0 {
			t.Errorf("phase %s, actions %v: want RolledBack and nothing to do", r.Status.Phase, r.Actions)
		}
		e := nsEntry(t, r.Status, "a")
		contains(t, "message", e.Message, "the mesh minimumMode STRICT forbids its previous mode PERMISSIVE, so it stays STRICT (the floor wins)")
		if e.Reason != "BelowMinimumMode" {
			t.Errorf("reason %q", e.Reason)
		}
	})
	t.Run("should say Stalled when a rollback does not show a minute later", func(t *testing.T) {
		r := Step(spec, base(entry("a", v1alpha1.NamespaceRolledBack, prev(permissive), since(-2*time.Minute))),
			Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": strict}}, t0)
		if renderActions(r.Actions) != "Rollback a to PERMISSIVE (again)" {
			t.Errorf("actions %v", r.Actions)
		}
		if c := stalled(r.Status); c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.RolloutReasonRollbackNotApplied {
			t.Errorf("Stalled = %+v", c)
		} else {
			contains(t, "Stalled message", c.Message, "namespace a: spec.mode is STRICT, not its previous mode PERMISSIVE, 2m after the rollback")
		}
	})
}

func TestReviewContestedMode(t *testing.T) {
	t.Run("should fail a namespace whose spec.mode someone keeps changing during the soak, naming the writer", func(t *testing.T) {
		spec := baseSpec()
		st := v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: []v1alpha1.NamespaceRolloutStatus{
			entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-4*time.Minute)),
			entry("b", v1alpha1.NamespacePending),
		}}
		now := t0
		for i := 0; i < 20 && st.Phase == v1alpha1.RolloutProgressing; i++ {
			mode := strict
			if i%2 == 1 {
				mode = permissive // the owner reverts it every few minutes
			}
			obs := Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": mode, "b": permissive},
				Pods: map[string][]Pod{"a": pods(pod("a-0")), "b": pods(pod("b-0", follows(unset)))}}
			obs.ModeWriters = map[string]string{"a": "argocd-controller"}
			st = Step(spec, st, obs, now).Status
			now = now.Add(2 * time.Minute)
		}
		a := nsEntry(t, st, "a")
		if a.State != v1alpha1.NamespaceFailed || a.Reason != v1alpha1.RolloutReasonModeContested || a.SoakRestarts != 3 {
			t.Fatalf("a = %s/%s after %d restarts, want Failed/ModeContested after 3: %s", a.State, a.Reason, a.SoakRestarts, a.Message)
		}
		contains(t, "message", a.Message, "spec.mode was changed away from STRICT after promotion 4 times (now PERMISSIVE, last by field manager argocd-controller)")
		if c := stalled(st); st.Phase != v1alpha1.RolloutFailed || c.Status != metav1.ConditionTrue {
			t.Errorf("phase %s, Stalled %+v", st.Phase, c)
		}
	})
}

func TestReviewProgressDeadline(t *testing.T) {
	spec := baseSpec()
	spec.ProgressDeadline = &metav1.Duration{Duration: 30 * time.Minute}
	st := v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: []v1alpha1.NamespaceRolloutStatus{
		entry("a", v1alpha1.NamespaceWaiting, since(-31*time.Minute)),
	}}
	obs := Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0", unapplied), pod("a-1"))}}
	t.Run("should set Stalled NamespaceNotReady naming the namespace and its blocking pods once progressDeadline has passed, and keep waiting", func(t *testing.T) {
		r := Step(spec, st, obs, t0)
		c := stalled(r.Status)
		if c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.RolloutReasonNamespaceNotReady || r.Status.Phase != v1alpha1.RolloutProgressing {
			t.Fatalf("phase %s, Stalled %+v", r.Status.Phase, c)
		}
		contains(t, "Stalled message", c.Message, "namespace a has been waiting for 31m (progressDeadline 30m): 1 of 2 pods has not applied its config: a-0")
		st = r.Status
	})
	t.Run("should clear Stalled when the namespace moves", func(t *testing.T) {
		obs.Pods["a"] = pods(pod("a-0", follows(permissive)), pod("a-1", follows(permissive)))
		r := Step(spec, st, obs, t0.Add(time.Minute))
		if c := stalled(r.Status); c.Status != metav1.ConditionFalse || renderActions(r.Actions) != "Promote a to STRICT" {
			t.Errorf("actions %v, Stalled %+v", r.Actions, c)
		}
	})
	t.Run("should not stall before progressDeadline, and wake when it passes", func(t *testing.T) {
		st := v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting, since(-10*time.Minute))}}
		obs.Pods["a"] = pods(pod("a-0", unapplied))
		r := Step(spec, st, obs, t0)
		if c := stalled(r.Status); c.Status != metav1.ConditionFalse || !r.RequeueAt.Equal(t0.Add(20*time.Minute)) {
			t.Errorf("Stalled %+v, requeue %v", c, r.RequeueAt)
		}
	})
}

func TestReviewWorkloadExceptions(t *testing.T) {
	t.Run("should not call a namespace STRICT while a WorkloadMTLSPolicy keeps pods weaker, and say so plainly", func(t *testing.T) {
		st := v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: []v1alpha1.NamespaceRolloutStatus{
			entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-5*time.Minute))}}
		obs := Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(
			pod("a-0"), pod("legacy-0", keptBy(permissive, "legacy")), pod("legacy-1", keptBy(permissive, "legacy")), pod("legacy-2", keptBy(permissive, "legacy")), pod("s-0", keptBy(strict, "tight")))}}
		r := Step(baseSpec(), st, obs, t0)
		a := nsEntry(t, r.Status, "a")
		if a.State != v1alpha1.NamespaceSucceeded {
			t.Fatalf("a = %s", a.State)
		}
		contains(t, "message", a.Message, "STRICT except 3 pods kept PERMISSIVE by WorkloadMTLSPolicy legacy; soaked 5m")
		ready := meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionReady)
		if strings.Contains(ready.Message, "every selected namespace is STRICT") {
			t.Errorf("Ready says every namespace is STRICT: %q", ready.Message)
		}
		contains(t, "Ready message", ready.Message, "WorkloadMTLSPolicies keep some pods weaker: a (STRICT except 3 pods kept PERMISSIVE by WorkloadMTLSPolicy legacy")
	})
}

func TestReviewRecreatedRollout(t *testing.T) {
	t.Run("should resume the soak of a namespace an earlier rollout promoted and did not soak, with its previous mode", func(t *testing.T) {
		obs := Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict},
			Marks: map[string]Mark{"a": {By: "shop", At: t0.Add(-10 * time.Second), PreviousMode: permissive}},
			Pods:  map[string][]Pod{"a": pods(pod("a-0", rejected(3)))}}
		if n := Needs(baseSpec(), v1alpha1.MTLSRolloutStatus{}, obs, t0); strings.Join(n, ",") != "a" {
			t.Errorf("Needs = %v, want its pods looked at", n)
		}
		r := Step(baseSpec(), v1alpha1.MTLSRolloutStatus{}, obs, t0)
		if got := renderNS(r.Status.Namespaces); got != "a=Soaking(PERMISSIVE,a-0:3)" {
			t.Fatalf("got %s: %s", got, r.Status.Namespaces[0].Message)
		}
		contains(t, "message", r.Status.Namespaces[0].Message, "promoted by MTLSRollout shop at 2026-11-23T17:59:50Z (was PERMISSIVE) and not soaked: soaking again, 5m left")
		if r.Status.Phase != v1alpha1.RolloutProgressing {
			t.Errorf("phase %s", r.Status.Phase)
		}
		// The soak ends: the marks are removed (Settle), so a later rollout skips it.
		obs.Pods["a"] = pods(pod("a-0", rejected(3)))
		r = Step(baseSpec(), r.Status, obs, t0.Add(5*time.Minute))
		if renderNS(r.Status.Namespaces) != "a=Succeeded(PERMISSIVE)" || renderActions(r.Actions) != "Settle a to STRICT" || r.Status.Phase != v1alpha1.RolloutSucceeded {
			t.Errorf("got %s %v %s", renderNS(r.Status.Namespaces), r.Actions, r.Status.Phase)
		}
	})
	t.Run("should still skip a namespace that is STRICT without promotion marks", func(t *testing.T) {
		r := Step(baseSpec(), v1alpha1.MTLSRolloutStatus{}, Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}}, t0)
		if renderNS(r.Status.Namespaces) != "a=Skipped" {
			t.Errorf("got %s", renderNS(r.Status.Namespaces))
		}
	})
}

func TestReviewCreatedPolicy(t *testing.T) {
	t.Run("should record that it created the policy, and delete it on rollback", func(t *testing.T) {
		obs := Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{}, Pods: map[string][]Pod{"a": pods(pod("a-0", follows(unset)))}}
		r := Step(baseSpec(), v1alpha1.MTLSRolloutStatus{}, obs, t0)
		if e := nsEntry(t, r.Status, "a"); !e.CreatedPolicy || e.PreviousMode != unset {
			t.Fatalf("entry %+v", e)
		}
		obs.Modes["a"] = strict
		obs.Pods["a"] = pods(pod("a-0", rejected(1)))
		r = Step(baseSpec(), r.Status, obs, t0.Add(time.Minute))
		if got := renderActions(r.Actions); got != "Rollback a to UNSET or delete the policy it created" {
			t.Errorf("actions %q", got)
		}
		contains(t, "message", nsEntry(t, r.Status, "a").Message, "the NamespaceMTLSPolicy the rollout created is deleted")
	})
	t.Run("should not delete a policy that existed before", func(t *testing.T) {
		obs := Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": unset}, Pods: map[string][]Pod{"a": pods(pod("a-0", follows(unset)))}}
		r := Step(baseSpec(), v1alpha1.MTLSRolloutStatus{}, obs, t0)
		if e := nsEntry(t, r.Status, "a"); e.CreatedPolicy {
			t.Fatalf("entry %+v", e)
		}
	})
}

func TestReviewPodWithoutStart(t *testing.T) {
	t.Run("should not count a pod whose start is unknown as watched for the plaintext window", func(t *testing.T) {
		p := Pod{Name: "a-0", Config: true, Applied: true, CertificateReady: true, NamespaceMode: permissive}
		r := Step(baseSpec(), v1alpha1.MTLSRolloutStatus{}, Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": {p}}}, t0)
		if len(r.Actions) > 0 {
			t.Fatalf("promoted a pod of unknown age: %v", r.Actions)
		}
		contains(t, "message", nsEntry(t, r.Status, "a").Message, "1 of 1 pods has no known start, so no plaintext window: a-0")
	})
}

func TestReviewPodFromTimes(t *testing.T) {
	t.Run("should read the start from creationTimestamp and the last report from the status entries of managedFields", func(t *testing.T) {
		at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }
		ppc := &v1alpha1.PodProxyConfig{
			ObjectMeta: metav1.ObjectMeta{CreationTimestamp: *at(-5 * time.Minute), ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "meshtls-operator", Operation: metav1.ManagedFieldsOperationApply, Time: at(-time.Second)},
				{Manager: "meshtls-proxy", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: at(-2 * time.Minute)},
			}},
			Spec: v1alpha1.PodProxyConfigSpec{PodUID: "u", Decision: []v1alpha1.Decision{{Scope: v1alpha1.ScopeWorkload, Kind: "WorkloadMTLSPolicy", Name: "legacy", Mode: permissive}}},
		}
		p := PodFrom("a-0", "u", ppc)
		if !p.Created.Equal(t0.Add(-5*time.Minute)) || !p.ReportedAt.Equal(t0.Add(-2*time.Minute)) {
			t.Errorf("created %v, reported %v", p.Created, p.ReportedAt)
		}
		if !p.WorkloadDecides || p.WorkloadMode != permissive || p.WorkloadPolicy != "legacy" {
			t.Errorf("workload: %+v", p)
		}
	})
}
