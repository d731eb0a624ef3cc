package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)

const (
	strict     = v1alpha1.ModeStrict
	permissive = v1alpha1.ModePermissive
	unset      = v1alpha1.ModeUnset
)

// Builders, in the cert-manager way: a namespace entry or a pod with options.

type entryOpt func(*v1alpha1.NamespaceRolloutStatus)

func entry(name string, state v1alpha1.NamespaceRolloutState, opts ...entryOpt) v1alpha1.NamespaceRolloutStatus {
	e := v1alpha1.NamespaceRolloutStatus{Name: name, State: state, Since: &metav1.Time{Time: t0.Add(-time.Hour)}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func prev(m v1alpha1.Mode) entryOpt {
	return func(e *v1alpha1.NamespaceRolloutStatus) { e.PreviousMode = m }
}

// since sets when the entry entered its state, relative to t0.
func since(d time.Duration) entryOpt {
	return func(e *v1alpha1.NamespaceRolloutStatus) { e.Since = &metav1.Time{Time: t0.Add(d)} }
}

func baseline(pod string, v int64) entryOpt {
	return func(e *v1alpha1.NamespaceRolloutStatus) {
		e.RejectedPlaintextAtPromotion = append(e.RejectedPlaintextAtPromotion, v1alpha1.PodCounter{Pod: pod, Value: v})
	}
}

type podOpt func(*Pod)

// pod is a pod ready for promotion whose configuration follows a STRICT namespace.
func pod(name string, opts ...podOpt) Pod {
	p := Pod{Name: name, Config: true, Applied: true, NamespaceMode: strict, CertificateReady: true, Created: t0.Add(-time.Hour)}
	for _, o := range opts {
		o(&p)
	}
	return p
}

var (
	unapplied = func(p *Pod) { p.Applied = false }
	noConfig  = func(p *Pod) { *p = Pod{Name: p.Name, NamespaceMode: unset} }
	noSidecar = func(p *Pod) { p.SidecarMissing, p.Applied = true, false }
	workload  = func(p *Pod) { p.WorkloadDecides, p.NamespaceMode = true, unset }
)

func follows(m v1alpha1.Mode) podOpt { return func(p *Pod) { p.NamespaceMode = m } }

func noCert(reason string) podOpt {
	return func(p *Pod) { p.CertificateReady, p.CertificateReason = false, reason }
}

func plaintext(ago time.Duration, from string) podOpt {
	return func(p *Pod) { p.LastPlaintext, p.LastPlaintextFrom = t0.Add(-ago), from }
}

func rejected(n int64) podOpt { return func(p *Pod) { p.RejectedPlaintext = n } }

func pods(p ...Pod) []Pod { return append([]Pod{}, p...) }

type stepCase struct {
	name     string
	spec     func(*v1alpha1.MTLSRolloutSpec)
	phase    v1alpha1.RolloutPhase
	entries  []v1alpha1.NamespaceRolloutStatus
	obs      Observation
	wantNS   string // "a=Promoted b=Pending"
	wantAct  string // "Promote a to STRICT; ..."
	phaseIs  v1alpha1.RolloutPhase
	messages map[string]string // namespace ("" for the Ready condition) -> a substring of its message
	stalled  string            // the Stalled reason when Stalled must be True
	requeue  time.Duration     // from t0; 0: none
}

func baseSpec() v1alpha1.MTLSRolloutSpec {
	return v1alpha1.MTLSRolloutSpec{
		TargetMode: strict, NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
		MaxConcurrent: 1, SoakDuration: &metav1.Duration{Duration: 5 * time.Minute},
		PlaintextWindow: &metav1.Duration{Duration: 10 * time.Minute}, RollbackOnFailure: ptr.To(true),
	}
}

func TestStep(t *testing.T) {
	tests := []stepCase{
		// Selection.
		{name: "should wait, stalled, while the selector selects no namespace",
			wantNS: "", phaseIs: v1alpha1.RolloutPending, stalled: v1alpha1.RolloutReasonNoNamespaces,
			messages: map[string]string{"": "selects no namespace"}},
		{name: "should stall on a selector it cannot use, and touch nothing",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting)},
			obs:     Observation{SelectorError: `"in" needs values`, Selected: []string{"b"}},
			wantNS:  "a=Waiting", phaseIs: v1alpha1.RolloutPending, stalled: v1alpha1.RolloutReasonInvalidSelector},
		{name: "should add newly selected namespaces and promote the first ready one, in name order",
			obs:    Observation{Selected: []string{"b", "a"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0")), "b": pods(pod("b-0"))}},
			wantNS: "a=Promoted(PERMISSIVE) b=Pending", wantAct: "Promote a to STRICT", phaseIs: v1alpha1.RolloutProgressing,
			messages: map[string]string{"a": "every meshed pod (1) applied its config", "b": "waiting for a free slot (maxConcurrent 1): a is promoted"}},
		{name: "should promote a namespace without meshed pods (new pods will start STRICT)",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": {}}},
			wantNS: "a=Promoted(UNSET)", wantAct: "Promote a to STRICT", messages: map[string]string{"a": "no meshed pods; writing spec.mode STRICT (was UNSET)"}},
		{name: "should wait for its turn when the controller did not look at its pods",
			obs:    Observation{Selected: []string{"a"}},
			wantNS: "a=Pending", requeue: time.Nanosecond /* now */, messages: map[string]string{"a": "its turn"}},

		// Readiness: the check chain.
		{name: "should wait while pods have not applied their config",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", unapplied), pod("a-1"), pod("a-2", unapplied))}},
			wantNS:  "a=Waiting", phaseIs: v1alpha1.RolloutProgressing, requeue: 30 * time.Minute, // the progress deadline
			messages: map[string]string{"a": "2 of 3 pods have not applied their config: a-0, a-2", "": "1 waiting of 1 namespace"}},
		{name: "should wait while a pod has no PodProxyConfig",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", noConfig), pod("a-1"))}},
			wantNS: "a=Waiting", requeue: 30 * time.Minute,
			messages: map[string]string{"a": "1 of 2 pods has no PodProxyConfig yet: a-0"}},
		{name: "should wait while certificates are not ready, and say why",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", noCert("the mesh has no issuer")))}},
			wantNS: "a=Waiting", requeue: 30 * time.Minute,
			messages: map[string]string{"a": "1 of 1 pods has no ready certificate: a-0 (the mesh has no issuer)"}},
		{name: "should wait out the plaintext window, and ask to be woken when it closes",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", plaintext(2*time.Minute, "10.0.0.7")), pod("a-1", plaintext(4*time.Minute, "")))}},
			wantNS: "a=Waiting", requeue: 8 * time.Minute,
			messages: map[string]string{"a": "plaintext seen 2m ago on pod a-0 from 10.0.0.7; promotion needs 10m without plaintext, 8m left"}},
		{name: "should promote once the plaintext window has passed",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", plaintext(10*time.Minute, "")))}},
			wantNS: "a=Promoted(UNSET)", wantAct: "Promote a to STRICT"},
		{name: "should say every reason at once",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", unapplied), pod("a-1", noCert("")), pod("a-2", plaintext(time.Minute, "")))}},
			wantNS: "a=Waiting", requeue: 9 * time.Minute,
			messages: map[string]string{"a": "1 of 3 pods has not applied its config: a-0; 1 of 3 pods has no ready certificate: a-1; plaintext seen 1m ago"}},
		{name: "should stall when only recreating pods without a sidecar can move it on",
			obs:    Observation{Selected: []string{"a"}, Pods: map[string][]Pod{"a": pods(pod("a-0", noSidecar), pod("a-1"))}},
			wantNS: "a=Waiting", phaseIs: v1alpha1.RolloutProgressing, stalled: v1alpha1.RolloutReasonPodsWithoutSidecar, requeue: 30 * time.Minute,
			messages: map[string]string{"a": "1 of 2 pods has no sidecar and cannot speak mTLS; recreate it: a-0"}},
		{name: "should not stall on pods without a sidecar while another namespace can move",
			obs:    Observation{Selected: []string{"a", "b"}, Pods: map[string][]Pod{"a": pods(pod("a-0", noSidecar)), "b": pods(pod("b-0", unapplied))}},
			wantNS: "a=Waiting b=Waiting", phaseIs: v1alpha1.RolloutProgressing, requeue: 30 * time.Minute},
		{name: "should go back from Waiting to Pending when the slot is taken",
			spec:    func(s *v1alpha1.MTLSRolloutSpec) { s.MaxConcurrent = 1 },
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting), entry("b", v1alpha1.NamespaceWaiting)},
			obs:     Observation{Selected: []string{"a", "b"}, Pods: map[string][]Pod{"a": pods(pod("a-0")), "b": pods(pod("b-0"))}},
			wantNS:  "a=Promoted(UNSET) b=Pending", wantAct: "Promote a to STRICT"},
		{name: "should promote as many as maxConcurrent allows",
			spec:   func(s *v1alpha1.MTLSRolloutSpec) { s.MaxConcurrent = 2 },
			obs:    Observation{Selected: []string{"a", "b", "c"}, Pods: map[string][]Pod{"a": pods(pod("a-0")), "b": pods(pod("b-0")), "c": pods(pod("c-0"))}},
			wantNS: "a=Promoted(UNSET) b=Promoted(UNSET) c=Pending", wantAct: "Promote a to STRICT; Promote b to STRICT",
			messages: map[string]string{"c": "maxConcurrent 2"}},
		{name: "should record the previous mode and the non-zero rejectedPlaintext counters at promotion",
			obs:    Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": v1alpha1.ModeDisable}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(3)), pod("a-1"))}},
			wantNS: "a=Promoted(DISABLE,a-0:3)", wantAct: "Promote a to STRICT"},

		// Already at the target.
		{name: "should skip a namespace whose policy says STRICT",
			obs:    Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}},
			wantNS: "a=Skipped", phaseIs: v1alpha1.RolloutSucceeded, messages: map[string]string{"a": "already STRICT (its NamespaceMTLSPolicy says so)"}},
		{name: "should skip a namespace that inherits STRICT from the mesh",
			obs:    Observation{Selected: []string{"a"}, Mesh: Mesh{Mode: strict}, Modes: map[string]v1alpha1.Mode{"a": unset}},
			wantNS: "a=Skipped", messages: map[string]string{"a": "inherited from the MeshMTLSPolicy"}},
		{name: "should skip a namespace the mesh floor raises to STRICT",
			obs:    Observation{Selected: []string{"a"}, Mesh: Mesh{Mode: strict, MinimumMode: strict}, Modes: map[string]v1alpha1.Mode{"a": permissive}},
			wantNS: "a=Skipped", messages: map[string]string{"a": "raised to the mesh minimumMode"}},
		{name: "should succeed at once when every namespace is already STRICT",
			obs:    Observation{Selected: []string{"a", "b"}, Mesh: Mesh{Mode: strict}, Modes: map[string]v1alpha1.Mode{"b": strict}},
			wantNS: "a=Skipped b=Skipped", phaseIs: v1alpha1.RolloutSucceeded, messages: map[string]string{"": "2 skipped of 2 namespaces"}},

		// In flight.
		{name: "should wait, Promoted, while pods still run the configuration from before the promotion",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespacePromoted, prev(permissive), since(-time.Minute))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0", follows(permissive)), pod("a-1", unapplied), pod("a-2", workload))}},
			wantNS:  "a=Promoted(PERMISSIVE)", phaseIs: v1alpha1.RolloutProgressing, requeue: 29 * time.Minute,
			messages: map[string]string{"a": "spec.mode is STRICT; 2 of 3 pods have not applied it yet: a-0, a-1"}},
		{name: "should start the soak once every pod applied the target mode, and wake when it ends",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespacePromoted, prev(permissive))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0"), pod("a-1", workload), pod("a-2", noSidecar))}},
			wantNS:  "a=Soaking(PERMISSIVE)", requeue: 5 * time.Minute, messages: map[string]string{"a": "soaking, 5m left"}},
		{name: "should promote again when the cluster does not show the recorded promotion",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespacePromoted, prev(permissive))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0", follows(permissive)))}},
			wantNS:  "a=Promoted(PERMISSIVE)", wantAct: "Promote a to STRICT (again)"},
		{name: "should keep soaking and say how long is left",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-2*time.Minute))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0"))}},
			wantNS:  "a=Soaking(PERMISSIVE)", requeue: 3 * time.Minute, messages: map[string]string{"a": "soaking, 3m left"}},
		{name: "should succeed a namespace that soaked cleanly, and promote the next",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-5*time.Minute), baseline("a-0", 2)), entry("b", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(2))), "b": pods(pod("b-0"))}},
			wantNS:  "a=Succeeded(PERMISSIVE) b=Promoted(PERMISSIVE)", wantAct: "Settle a to STRICT; Promote b to STRICT"},
		{name: "should start the soak over when someone changes spec.mode during it",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-2*time.Minute))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0"))}},
			wantNS:  "a=Promoted(PERMISSIVE)", wantAct: "Promote a to STRICT (again)", messages: map[string]string{"a": "was changed to PERMISSIVE during the soak"}},
		{name: "should roll back when rejectedPlaintext rises during the soak, and stop the rollout",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-time.Minute), baseline("a-1", 5)), entry("b", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict, "b": permissive}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(1)), pod("a-1", rejected(7))), "b": pods(pod("b-0"))}},
			wantNS:  "a=RolledBack(PERMISSIVE) b=Pending", wantAct: "Rollback a to PERMISSIVE", phaseIs: v1alpha1.RolloutProgressing,
			messages: map[string]string{"a": "rejectedPlaintext rose by 3 after promotion (a-0 +1, a-1 +2)", "b": "the rollout stopped after a failed"}},
		{name: "should count all of a counter that went below its baseline (the proxy restarted)",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(unset), since(-time.Minute), baseline("a-0", 5))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(2)))}},
			wantNS:  "a=RolledBack(UNSET)", wantAct: "Rollback a to UNSET", messages: map[string]string{"a": "a-0 +2"}},
		{name: "should roll back on a rise that comes before the pods applied the target mode",
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespacePromoted, prev(permissive))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(1), unapplied))}},
			wantNS:  "a=RolledBack(PERMISSIVE)", wantAct: "Rollback a to PERMISSIVE"},
		{name: "should fail and leave the namespace as it is when rollbackOnFailure is false",
			spec:    func(s *v1alpha1.MTLSRolloutSpec) { s.RollbackOnFailure = ptr.To(false) },
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-time.Minute))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(1)))}},
			wantNS:  "a=Failed(PERMISSIVE)", wantAct: "", phaseIs: v1alpha1.RolloutFailed, stalled: v1alpha1.RolloutReasonFailed,
			messages: map[string]string{"a": "left at STRICT (rollbackOnFailure is false)", "": "namespace a failed"}},
		{name: "should stay Progressing until the rollback shows in the cluster",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRolledBack, prev(permissive), since(-10*time.Second))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}},
			wantNS:  "a=RolledBack(PERMISSIVE)", wantAct: "Rollback a to PERMISSIVE (again)", phaseIs: v1alpha1.RolloutProgressing, requeue: 50 * time.Second},
		{name: "should end RolledBack once the previous mode is back",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRolledBack, prev(permissive)), entry("b", v1alpha1.NamespaceSucceeded, prev(permissive)), entry("c", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a", "b", "c"}, Modes: map[string]v1alpha1.Mode{"a": permissive, "b": strict}},
			wantNS:  "a=RolledBack(PERMISSIVE) b=Succeeded(PERMISSIVE) c=Pending", phaseIs: v1alpha1.RolloutRolledBack, stalled: v1alpha1.RolloutReasonRolledBack,
			messages: map[string]string{"": "namespace a was rolled back"}},
		{name: "should let namespaces in flight finish after a failure before it ends",
			spec:    func(s *v1alpha1.MTLSRolloutSpec) { s.MaxConcurrent = 2 },
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRolledBack, prev(permissive)), entry("b", v1alpha1.NamespaceSoaking, prev(permissive), since(-time.Minute)), entry("c", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a", "b", "c"}, Modes: map[string]v1alpha1.Mode{"a": permissive, "b": strict}, Pods: map[string][]Pod{"b": pods(pod("b-0"))}},
			wantNS:  "a=RolledBack(PERMISSIVE) b=Soaking(PERMISSIVE) c=Pending", phaseIs: v1alpha1.RolloutProgressing, requeue: 4 * time.Minute,
			messages: map[string]string{"": "stopping after a failed"}},

		// Pause.
		{name: "should not promote while paused, and let the namespace in flight finish its soak",
			spec:    func(s *v1alpha1.MTLSRolloutSpec) { s.Paused, s.MaxConcurrent = true, 2 },
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-5*time.Minute)), entry("b", v1alpha1.NamespaceWaiting)},
			obs:     Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0")), "b": pods(pod("b-0"))}},
			wantNS:  "a=Succeeded(PERMISSIVE) b=Pending", wantAct: "Settle a to STRICT", phaseIs: v1alpha1.RolloutPaused, messages: map[string]string{"b": "paused"}},
		{name: "should still roll back while paused",
			spec:    func(s *v1alpha1.MTLSRolloutSpec) { s.Paused = true },
			phase:   v1alpha1.RolloutPaused,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), since(-time.Minute))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0", rejected(1)))}},
			wantNS:  "a=RolledBack(PERMISSIVE)", wantAct: "Rollback a to PERMISSIVE"},
		{name: "should resume when no longer paused",
			phase:   v1alpha1.RolloutPaused,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSucceeded, prev(permissive)), entry("b", v1alpha1.NamespacePending)},
			obs:     Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"b": pods(pod("b-0"))}},
			wantNS:  "a=Succeeded(PERMISSIVE) b=Promoted(UNSET)", wantAct: "Promote b to STRICT", phaseIs: v1alpha1.RolloutProgressing},

		// Spec edits mid-way.
		{name: "should leave a namespace removed mid-soak as it is, and report it",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSoaking, prev(permissive), baseline("a-0", 1)), entry("b", v1alpha1.NamespaceWaiting), entry("c", v1alpha1.NamespaceSucceeded, prev(permissive))},
			obs:     Observation{Selected: []string{"d"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"d": pods(pod("d-0"))}},
			wantNS:  "a=Removed(PERMISSIVE) b=Removed c=Succeeded(PERMISSIVE) d=Promoted(UNSET)", wantAct: "Promote d to STRICT",
			messages: map[string]string{"a": "no longer selected while soaking; left at STRICT (was PERMISSIVE)", "b": "no longer selected before its turn; not changed"}},
		{name: "should take a removed namespace back, keep its previous mode, and promote it again without skipping it",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRemoved, prev(permissive))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}, Pods: map[string][]Pod{"a": pods(pod("a-0"))}},
			wantNS:  "a=Promoted(PERMISSIVE)", wantAct: "Promote a to STRICT"},
		{name: "should end Pending, stalled, when every namespace was removed",
			phase:   v1alpha1.RolloutProgressing,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting)},
			obs:     Observation{},
			wantNS:  "a=Removed", phaseIs: v1alpha1.RolloutPending, stalled: v1alpha1.RolloutReasonNoNamespaces},

		// Overlap.
		{name: "should wait for an older overlapping rollout and promote nothing",
			obs:    Observation{Selected: []string{"a"}, Overlaps: []string{"older"}, Pods: map[string][]Pod{"a": pods(pod("a-0"))}},
			wantNS: "a=Pending", phaseIs: v1alpha1.RolloutPending, messages: map[string]string{"a": "waiting for MTLSRollout older"}},

		// Finished.
		{name: "should move nothing once finished, not even newly selected namespaces",
			phase:   v1alpha1.RolloutSucceeded,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceSucceeded, prev(permissive))},
			obs:     Observation{Selected: []string{"a", "b"}, Modes: map[string]v1alpha1.Mode{"a": permissive}, Pods: map[string][]Pod{"b": pods(pod("b-0"))}},
			wantNS:  "a=Succeeded(PERMISSIVE)", phaseIs: v1alpha1.RolloutSucceeded},
		{name: "should not repeat a rollback once the rollout ended RolledBack",
			phase:   v1alpha1.RolloutRolledBack,
			entries: []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRolledBack, prev(permissive))},
			obs:     Observation{Selected: []string{"a"}, Modes: map[string]v1alpha1.Mode{"a": strict}},
			wantNS:  "a=RolledBack(PERMISSIVE)", phaseIs: v1alpha1.RolloutRolledBack, stalled: v1alpha1.RolloutReasonRolledBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			if tt.spec != nil {
				tt.spec(&spec)
			}
			status := v1alpha1.MTLSRolloutStatus{Phase: tt.phase, Namespaces: tt.entries}
			before := status.DeepCopy()
			tt.obs.Generation = 3
			r := Step(spec, status, tt.obs, t0.Add(300*time.Millisecond))

			if !equalStatus(before, &status) {
				t.Errorf("Step changed its input status")
			}
			if got := renderNS(r.Status.Namespaces); got != tt.wantNS {
				t.Errorf("namespaces: got %q, want %q", got, tt.wantNS)
			}
			if got := renderActions(r.Actions); got != tt.wantAct {
				t.Errorf("actions: got %q, want %q", got, tt.wantAct)
			}
			if tt.phaseIs != "" && r.Status.Phase != tt.phaseIs {
				t.Errorf("phase: got %s, want %s", r.Status.Phase, tt.phaseIs)
			}
			for ns, want := range tt.messages {
				got := ""
				if ns == "" {
					got = meta.FindStatusCondition(r.Status.Conditions, v1alpha1.ConditionReady).Message
				}
				for _, e := range r.Status.Namespaces {
					if e.Name == ns {
						got = e.Message
					}
				}
				if !strings.Contains(got, want) {
					t.Errorf("message of %q: got %q, want it to contain %q", ns, got, want)
				}
			}
			checkConditions(t, r.Status, tt.stalled)
			var wantRequeue time.Time
			if tt.requeue > 0 {
				wantRequeue = t0.Add(tt.requeue).Truncate(time.Second)
			}
			if !r.RequeueAt.Equal(wantRequeue) {
				t.Errorf("requeue at %v, want %v", r.RequeueAt, wantRequeue)
			}
			if r.Status.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d, want 3", r.Status.ObservedGeneration)
			}
			for _, n := range r.Notes {
				if n.Reason == "" || n.Message == "" {
					t.Errorf("a note without a reason or message: %+v", n)
				}
			}
		})
	}
}

// checkConditions checks the kstatus rules: Ready only when Succeeded, Progressing
// and Reconciling together and never with Stalled, Stalled with the reason wanted.
func checkConditions(t *testing.T, s v1alpha1.MTLSRolloutStatus, stalledReason string) {
	t.Helper()
	get := func(typ string) *metav1.Condition {
		c := meta.FindStatusCondition(s.Conditions, typ)
		if c == nil {
			t.Fatalf("no %s condition in %+v", typ, s.Conditions)
		}
		if c.ObservedGeneration != s.ObservedGeneration {
			t.Errorf("%s observedGeneration %d, want %d", typ, c.ObservedGeneration, s.ObservedGeneration)
		}
		return c
	}
	ready, progressing, reconciling, stalled := get(v1alpha1.ConditionReady), get(v1alpha1.ConditionProgressing), get(v1alpha1.ConditionReconciling), get(v1alpha1.ConditionStalled)
	if (ready.Status == metav1.ConditionTrue) != (s.Phase == v1alpha1.RolloutSucceeded) {
		t.Errorf("Ready=%s in phase %s", ready.Status, s.Phase)
	}
	if progressing.Status != reconciling.Status {
		t.Errorf("Progressing=%s but Reconciling=%s", progressing.Status, reconciling.Status)
	}
	if progressing.Status == metav1.ConditionTrue && stalled.Status == metav1.ConditionTrue {
		t.Errorf("Progressing and Stalled both True")
	}
	if got := stalled.Status == metav1.ConditionTrue; got != (stalledReason != "") {
		t.Errorf("Stalled=%s (%s), want stalled with %q", stalled.Status, stalled.Reason, stalledReason)
	} else if got && stalled.Reason != stalledReason {
		t.Errorf("Stalled reason %s, want %s", stalled.Reason, stalledReason)
	}
}

func renderNS(entries []v1alpha1.NamespaceRolloutStatus) string {
	var parts []string
	for _, e := range entries {
		s := e.Name + "=" + string(e.State)
		var extra []string
		if e.PreviousMode != "" {
			extra = append(extra, string(e.PreviousMode))
		}
		for _, b := range e.RejectedPlaintextAtPromotion {
			extra = append(extra, fmt.Sprintf("%s:%d", b.Pod, b.Value))
		}
		if len(extra) > 0 {
			s += "(" + strings.Join(extra, ",") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func renderActions(actions []Action) string {
	var parts []string
	for _, a := range actions {
		parts = append(parts, a.String())
	}
	return strings.Join(parts, "; ")
}

func equalStatus(a, b *v1alpha1.MTLSRolloutStatus) bool {
	return fmt.Sprintf("%+v", *a) == fmt.Sprintf("%+v", *b)
}

func TestNeeds(t *testing.T) {
	spec := baseSpec()
	tests := []struct {
		name    string
		paused  bool
		entries []v1alpha1.NamespaceRolloutStatus
		modes   map[string]v1alpha1.Mode
		want    string
	}{
		{"should look at every not-started namespace while a slot is free, but not at those at the target",
			false, []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting), entry("c", v1alpha1.NamespaceSucceeded)},
			map[string]v1alpha1.Mode{"d": strict}, "a b"},
		{"should look only at the namespace in flight while the slot is taken",
			false, []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting), entry("b", v1alpha1.NamespaceSoaking, since(0))},
			nil, "b"},
		{"should count a soak that ends now as a free slot",
			false, []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting), entry("b", v1alpha1.NamespaceSoaking, since(-5*time.Minute))},
			nil, "a b c d"},
		{"should look only at namespaces in flight while paused",
			true, []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceWaiting), entry("b", v1alpha1.NamespacePromoted)},
			nil, "b"},
		{"should look at nothing once a namespace failed, but the ones in flight",
			false, []v1alpha1.NamespaceRolloutStatus{entry("a", v1alpha1.NamespaceRolledBack), entry("b", v1alpha1.NamespacePending)},
			nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec.Paused = tt.paused
			obs := Observation{Selected: []string{"a", "b", "c", "d"}, Modes: tt.modes}
			got := strings.Join(Needs(spec, v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutProgressing, Namespaces: tt.entries}, obs, t0), " ")
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if got := Needs(spec, v1alpha1.MTLSRolloutStatus{Phase: v1alpha1.RolloutSucceeded}, Observation{Selected: []string{"a"}}, t0); len(got) != 0 {
		t.Errorf("a finished rollout needs nothing, got %v", got)
	}
}
