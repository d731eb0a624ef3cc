package rollout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/metrics"
)

const wait = 90 * time.Second

// soak is long enough for the test to see a namespace soaking, and short.
const soak = 5 * time.Second

func newRollout(name string, labels map[string]string, paused bool) *v1alpha1.MTLSRollout {
	return &v1alpha1.MTLSRollout{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.MTLSRolloutSpec{
			TargetMode: v1alpha1.ModeStrict, NamespaceSelector: metav1.LabelSelector{MatchLabels: labels},
			MaxConcurrent: 1, SoakDuration: &metav1.Duration{Duration: soak},
			PlaintextWindow: &metav1.Duration{Duration: 5 * time.Second}, RollbackOnFailure: ptr.To(true), Paused: paused,
		},
	}
}

func getRollout(t *testing.T, name string) *v1alpha1.MTLSRollout {
	t.Helper()
	ro := &v1alpha1.MTLSRollout{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, ro); err != nil {
		t.Fatal(err)
	}
	return ro
}

func nsStatus(ro *v1alpha1.MTLSRollout, ns string) v1alpha1.NamespaceRolloutStatus {
	for _, e := range ro.Status.Namespaces {
		if e.Name == ns {
			return e
		}
	}
	return v1alpha1.NamespaceRolloutStatus{}
}

// expectNamespace waits until namespace ns of the rollout is in state with a message
// containing msg.
func expectNamespace(t *testing.T, name, ns string, state v1alpha1.NamespaceRolloutState, msg string) {
	t.Helper()
	eventually(t, wait, fmt.Sprintf("%s is %s (%q)", ns, state, msg), func() error {
		e := nsStatus(getRollout(t, name), ns)
		if e.State != state || !strings.Contains(e.Message, msg) {
			return fmt.Errorf("%s is %s: %s", ns, e.State, e.Message)
		}
		return nil
	})
}

func expectPhase(t *testing.T, name string, phase v1alpha1.RolloutPhase) *v1alpha1.MTLSRollout {
	t.Helper()
	var ro *v1alpha1.MTLSRollout
	eventually(t, wait, fmt.Sprintf("rollout %s is %s", name, phase), func() error {
		ro = getRollout(t, name)
		if ro.Status.Phase != phase {
			return fmt.Errorf("phase %s; namespaces %+v", ro.Status.Phase, ro.Status.Namespaces)
		}
		return nil
	})
	return ro
}

// history records, from the outside, every state each namespace of a rollout goes
// through and how many namespaces were in flight at once.
type history struct {
	mu        sync.Mutex
	states    map[string][]v1alpha1.NamespaceRolloutState
	promoted  map[string]time.Time
	maxFlying int
}

func watchHistory(t *testing.T, name string) *history {
	h := &history{states: map[string][]v1alpha1.NamespaceRolloutState{}, promoted: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ro := &v1alpha1.MTLSRollout{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, ro); err == nil {
				h.mu.Lock()
				flying := 0
				for _, e := range ro.Status.Namespaces {
					if s := h.states[e.Name]; len(s) == 0 || s[len(s)-1] != e.State {
						h.states[e.Name] = append(s, e.State)
					}
					if e.State == v1alpha1.NamespacePromoted || e.State == v1alpha1.NamespaceSoaking {
						flying++
						if _, seen := h.promoted[e.Name]; !seen {
							h.promoted[e.Name] = time.Now()
						}
					}
				}
				h.maxFlying = max(h.maxFlying, flying)
				h.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// whenPromoted is when the namespace was first seen in flight.
func (h *history) whenPromoted(ns string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.promoted[ns]
}

func (h *history) of(ns string) []v1alpha1.NamespaceRolloutState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.states[ns])
}

// policyMode returns the spec.mode of the namespace's policy and who owns that field.
func policyMode(t *testing.T, ns string) (v1alpha1.Mode, []string) {
	t.Helper()
	p := &v1alpha1.NamespaceMTLSPolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "default"}, p); err != nil {
		t.Fatalf("NamespaceMTLSPolicy %s/default: %v", ns, err)
	}
	var owners []string
	for _, mf := range p.ManagedFields {
		if mf.FieldsV1 != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:mode"`) {
			owners = append(owners, mf.Manager+"/"+string(mf.Operation))
		}
	}
	return p.Spec.Mode, owners
}

func condition(ro *v1alpha1.MTLSRollout, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(ro.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// events returns "reason: note" of the Events about a rollout.
func events(t *testing.T, name string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "MTLSRollout" && e.Regarding.Name == name {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

func count(states []v1alpha1.NamespaceRolloutState, s v1alpha1.NamespaceRolloutState) int {
	n := 0
	for _, st := range states {
		if st == s {
			n++
		}
	}
	return n
}

func promotions() float64 {
	return testutil.ToFloat64(metrics.RolloutTransitions.WithLabelValues("namespace", string(v1alpha1.NamespacePromoted)))
}

func TestRolloutPromotesOneNamespaceAtATimeAcrossARestart(t *testing.T) {
	ctx := context.Background()
	mgr := startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "shop"}
	meshedNamespace(t, ps, "shop-a", labels, v1alpha1.ModePermissive, 2)
	meshedNamespace(t, ps, "shop-b", labels, "", 1)
	meshedNamespace(t, ps, "shop-c", labels, v1alpha1.ModePermissive, 2)
	meshedNamespace(t, ps, "shop-d", labels, v1alpha1.ModeStrict, 1)
	// The proxies of shop-a and shop-c have not applied their configuration yet; a
	// client keeps speaking plaintext to shop-b.
	for _, p := range []string{"shop-a/web-0", "shop-a/web-1", "shop-c/web-0", "shop-c/web-1"} {
		ps.byName[p].set(func(p *proxy) { p.hold = true })
	}
	ps.get("shop-b", "web-0").set(func(p *proxy) { p.speaking = true })
	ps.run(t)
	before := promotions()

	ro := newRollout("shop", labels, false)
	eventually(t, 30*time.Second, "create the rollout (the webhook may still be starting)", func() error { return ignoreExists(k8s.Create(ctx, ro)) })
	h := watchHistory(t, "shop")
	// kubectl wait is the end-of-migration signal.
	type result struct {
		out []byte
		err error
	}
	kubectlDone := make(chan result, 1)
	cmd, err := env.Kubectl(ctx, "wait", "--for=condition=Ready", "mtlsrollout/shop", "--timeout=120s")
	if err != nil {
		t.Fatal(err)
	}
	go func() { out, err := cmd.CombinedOutput(); kubectlDone <- result{out, err} }()

	t.Run("records a namespace already STRICT as such and skips it", func(t *testing.T) {
		expectNamespace(t, "shop", "shop-d", v1alpha1.NamespaceSkipped, "already STRICT (its NamespaceMTLSPolicy says so)")
	})
	t.Run("waits for pods that have not applied their config", func(t *testing.T) {
		expectNamespace(t, "shop", "shop-a", v1alpha1.NamespaceWaiting, "2 of 2 pods have not applied their config: web-0, web-1")
	})
	t.Run("waits while plaintext is seen", func(t *testing.T) {
		expectNamespace(t, "shop", "shop-b", v1alpha1.NamespaceWaiting, "plaintext seen")
		expectNamespace(t, "shop", "shop-c", v1alpha1.NamespaceWaiting, "2 of 2 pods have not applied their config")
	})

	// shop-c's proxies catch up.
	ps.get("shop-c", "web-0").set(func(p *proxy) { p.hold = false })
	ps.get("shop-c", "web-1").set(func(p *proxy) { p.hold = false })
	t.Run("promotes the namespace that is ready first, and soaks it", func(t *testing.T) {
		expectNamespace(t, "shop", "shop-c", v1alpha1.NamespaceSoaking, "soaking")
		for _, ns := range []string{"shop-a", "shop-b"} {
			if s := h.of(ns); slices.Contains(s, v1alpha1.NamespacePromoted) {
				t.Errorf("%s was promoted before shop-c: %v", ns, s)
			}
		}
	})

	outer := t
	t.Run("continues where it left off after the manager is stopped and started again", func(t *testing.T) {
		mgr.stop()
		stopped := getRollout(t, "shop")
		if e := nsStatus(stopped, "shop-c"); e.State != v1alpha1.NamespaceSoaking {
			t.Fatalf("the manager stopped after shop-c's soak: %+v", e)
		}
		time.Sleep(soak + time.Second) // the soak ends while no manager runs
		if now := getRollout(t, "shop"); fmt.Sprint(now.Status) != fmt.Sprint(stopped.Status) {
			t.Fatalf("the status changed while no manager ran:\n%+v\n%+v", stopped.Status, now.Status)
		}
		soakStart := nsStatus(stopped, "shop-c").Since
		startManager(outer) // runs past this subtest
		expectNamespace(t, "shop", "shop-c", v1alpha1.NamespaceSucceeded, "with no plaintext rejected")
		eventually(t, 5*time.Second, "the history sees shop-c succeed", func() error {
			s := h.of("shop-c")
			if count(s, v1alpha1.NamespaceSoaking) != 1 || s[len(s)-1] != v1alpha1.NamespaceSucceeded {
				return fmt.Errorf("shop-c went through %v: the soak started at %s", s, soakStart)
			}
			return nil
		})
	})

	// The proxies of shop-a catch up; the client of shop-b is meshed.
	ps.get("shop-a", "web-0").set(func(p *proxy) { p.hold = false })
	ps.get("shop-a", "web-1").set(func(p *proxy) { p.hold = false })
	quiet := time.Now()
	ps.get("shop-b", "web-0").set(func(p *proxy) { p.speaking = false })

	t.Run("waits out the plaintext window before it promotes", func(t *testing.T) {
		expectNamespace(t, "shop", "shop-b", v1alpha1.NamespaceSoaking, "")
		// The proxy reports lastPlaintextTime to the second, up to a report (200ms)
		// before the client went quiet.
		if h.whenPromoted("shop-b").Before(quiet.Add(5*time.Second - 1200*time.Millisecond)) {
			t.Errorf("shop-b was promoted %s after the last plaintext, within the 5s window", h.whenPromoted("shop-b").Sub(quiet))
		}
	})

	t.Run("ends Succeeded with every namespace promoted once, one at a time", func(t *testing.T) {
		ro := expectPhase(t, "shop", v1alpha1.RolloutSucceeded)
		if c := condition(ro, v1alpha1.ConditionReady); c.Status != metav1.ConditionTrue || c.ObservedGeneration != ro.Generation {
			t.Errorf("Ready = %+v", c)
		}
		if c := condition(ro, v1alpha1.ConditionStalled); c.Status != metav1.ConditionFalse {
			t.Errorf("Stalled = %+v", c)
		}
		if h.maxFlying > 1 {
			t.Errorf("%d namespaces were in flight at once, maxConcurrent is 1", h.maxFlying)
		}
		for _, ns := range []string{"shop-a", "shop-b", "shop-c"} {
			// The history is recorded from a watch, which may trail the Get that saw
			// the phase by an event.
			eventually(t, 10*time.Second, ns+" recorded as promoted once and Succeeded", func() error {
				s := h.of(ns)
				if count(s, v1alpha1.NamespacePromoted) != 1 || count(s, v1alpha1.NamespaceSoaking) != 1 || len(s) == 0 || s[len(s)-1] != v1alpha1.NamespaceSucceeded {
					return fmt.Errorf("%s went through %v, want one promotion and Succeeded", ns, s)
				}
				return nil
			})
		}
		if got := promotions() - before; got != 3 {
			t.Errorf("%v promotions were recorded across both managers, want 3", got)
		}
		want := map[string]v1alpha1.Mode{"shop-a": v1alpha1.ModePermissive, "shop-b": v1alpha1.ModeUnset, "shop-c": v1alpha1.ModePermissive, "shop-d": ""}
		for ns, prev := range want {
			if got := nsStatus(ro, ns).PreviousMode; got != prev {
				t.Errorf("%s previousMode = %q, want %q", ns, got, prev)
			}
		}
	})

	t.Run("kubectl wait --for=condition=Ready returns", func(t *testing.T) {
		select {
		case r := <-kubectlDone:
			if r.err != nil || !strings.Contains(string(r.out), "condition met") {
				t.Fatalf("kubectl wait: %v: %s", r.err, r.out)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("kubectl wait did not return")
		}
	})

	t.Run("spec.mode is STRICT and owned by meshtls-rollout; the pods enforce it", func(t *testing.T) {
		for _, ns := range []string{"shop-a", "shop-b", "shop-c"} {
			mode, owners := policyMode(t, ns)
			if mode != v1alpha1.ModeStrict || !slices.Equal(owners, []string{"meshtls-rollout/Apply"}) {
				t.Errorf("%s: spec.mode %s owned by %v, want STRICT owned by meshtls-rollout/Apply only", ns, mode, owners)
			}
			list := &v1alpha1.PodProxyConfigList{}
			if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			for _, ppc := range list.Items {
				if ppc.Spec.Inbound.Mode != v1alpha1.ModeStrict || ppc.Status.AppliedHash != ppc.Spec.ConfigHash {
					t.Errorf("%s/%s: inbound %s, applied %t", ns, ppc.Name, ppc.Spec.Inbound.Mode, ppc.Status.AppliedHash == ppc.Spec.ConfigHash)
				}
			}
		}
		if mode, owners := policyMode(t, "shop-d"); mode != v1alpha1.ModeStrict || slices.Contains(owners, "meshtls-rollout/Apply") {
			t.Errorf("shop-d (skipped) was written: %s by %v", mode, owners)
		}
	})

	t.Run("an Event says each promotion", func(t *testing.T) {
		eventually(t, 10*time.Second, "promotion events", func() error {
			evs := events(t, "shop")
			for _, ns := range []string{"shop-a", "shop-b", "shop-c"} {
				found := false
				for _, e := range evs {
					found = found || strings.HasPrefix(e, "Promoted: namespace "+ns+":")
				}
				if !found {
					return fmt.Errorf("no Promoted event for %s in %v", ns, evs)
				}
			}
			return nil
		})
	})
}

func TestRolloutRollsBackANamespaceWhosePlaintextIsRejected(t *testing.T) {
	ctx := context.Background()
	startManager(t)
	ps := &proxies{}
	labels := map[string]string{"rollout": "bank"}
	meshedNamespace(t, ps, "bank-a", labels, v1alpha1.ModePermissive, 1)
	meshedNamespace(t, ps, "bank-b", labels, v1alpha1.ModePermissive, 2)
	meshedNamespace(t, ps, "bank-c", labels, v1alpha1.ModePermissive, 1)
	// bank-b's web-1 rejected plaintext on a STRICT port before the rollout: its
	// baseline, not a failure.
	ps.get("bank-b", "web-1").set(func(p *proxy) { p.rejected = 4 })
	ps.run(t)
	// Every pod is watched for the plaintext window (5s) before it may be promoted;
	// the namespaces are promoted in name order only when all are past it at resume.
	watched := time.Now().Add(6 * time.Second)

	ro := newRollout("bank", labels, true)
	eventually(t, 30*time.Second, "create the rollout", func() error { return ignoreExists(k8s.Create(ctx, ro)) })

	t.Run("promotes nothing while paused", func(t *testing.T) {
		expectPhase(t, "bank", v1alpha1.RolloutPaused)
		expectNamespace(t, "bank", "bank-a", v1alpha1.NamespacePending, "paused")
		time.Sleep(2 * time.Second)
		for _, ns := range []string{"bank-a", "bank-b", "bank-c"} {
			if mode, _ := policyMode(t, ns); mode != v1alpha1.ModePermissive {
				t.Errorf("%s is %s while the rollout is paused", ns, mode)
			}
		}
	})

	t.Run("admission refuses an overlapping rollout while this one runs", func(t *testing.T) {
		err := k8s.Create(ctx, newRollout("bank-again", labels, true))
		if err == nil || !strings.Contains(err.Error(), `MTLSRollout "bank"`) {
			t.Fatalf("want the overlap refused, got %v", err)
		}
	})

	time.Sleep(time.Until(watched))
	eventually(t, 10*time.Second, "resume", func() error {
		ro := getRollout(t, "bank")
		ro.Spec.Paused = false
		return k8s.Update(ctx, ro)
	})

	t.Run("resumes, and rolls back the namespace whose rejectedPlaintext rises during its soak", func(t *testing.T) {
		expectNamespace(t, "bank", "bank-a", v1alpha1.NamespaceSucceeded, "")
		expectNamespace(t, "bank", "bank-b", v1alpha1.NamespaceSoaking, "")
		if mode, _ := policyMode(t, "bank-b"); mode != v1alpha1.ModeStrict {
			t.Fatalf("bank-b soaks at %s", mode)
		}
		ps.get("bank-b", "web-1").set(func(p *proxy) { p.rejected = 6 })
		expectNamespace(t, "bank", "bank-b", v1alpha1.NamespaceRolledBack, "rejectedPlaintext rose by 2 after promotion (web-1 +2)")
		eventually(t, wait, "bank-b back to PERMISSIVE", func() error {
			mode, owners := policyMode(t, "bank-b")
			if mode != v1alpha1.ModePermissive || !slices.Equal(owners, []string{"meshtls-rollout/Apply"}) {
				return fmt.Errorf("spec.mode %s owned by %v", mode, owners)
			}
			return nil
		})
	})

	t.Run("ends RolledBack, stalled, and promotes nothing more", func(t *testing.T) {
		ro := expectPhase(t, "bank", v1alpha1.RolloutRolledBack)
		if c := condition(ro, v1alpha1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.RolloutReasonRolledBack {
			t.Errorf("Ready = %+v", c)
		}
		if c := condition(ro, v1alpha1.ConditionStalled); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "namespace bank-b was rolled back") {
			t.Errorf("Stalled = %+v", c)
		}
		if e := nsStatus(ro, "bank-c"); e.State != v1alpha1.NamespacePending || !strings.Contains(e.Message, "stopped after bank-b failed") {
			t.Errorf("bank-c: %+v", e)
		}
		if mode, _ := policyMode(t, "bank-c"); mode != v1alpha1.ModePermissive {
			t.Errorf("bank-c is %s", mode)
		}
		if mode, _ := policyMode(t, "bank-a"); mode != v1alpha1.ModeStrict {
			t.Errorf("bank-a (succeeded) is %s", mode)
		}
		eventually(t, 10*time.Second, "a RolledBack event", func() error {
			for _, e := range events(t, "bank") {
				if strings.HasPrefix(e, "RolledBack: namespace bank-b:") {
					return nil
				}
			}
			return fmt.Errorf("none in %v", events(t, "bank"))
		})
	})

	t.Run("the proxies' reports went through the guard, which refuses anyone else", func(t *testing.T) {
		ppc := &v1alpha1.PodProxyConfig{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "bank-b", Name: "web-1"}, ppc); err != nil {
			t.Fatal(err)
		}
		if ppc.Status.Connections == nil || ppc.Status.Connections.RejectedPlaintext != 6 {
			t.Fatalf("the proxy's report is not there: %+v", ppc.Status)
		}
		ppc.Status.Connections.RejectedPlaintext = 0
		err := k8s.Status().Update(ctx, ppc)
		if err == nil || !strings.Contains(err.Error(), "status may be written only by the proxy of pod web-1") {
			t.Fatalf("want the guard to refuse the admin, got %v", err)
		}
	})

	t.Run("admission accepts a new rollout of the same namespaces once this one finished", func(t *testing.T) {
		again := newRollout("bank-again", labels, true)
		if err := k8s.Create(ctx, again); err != nil {
			t.Fatalf("a finished rollout still blocks a new one: %v", err)
		}
		if err := k8s.Delete(ctx, again); err != nil {
			t.Fatal(err)
		}
	})
}
