package rollout

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// verdict is the rollout-level outcome of a step: its phase and the conditions'
// reason and message.
type verdict struct {
	phase   v1alpha1.RolloutPhase
	reason  string
	message string
	stalled bool
}

// finish sets the phase, the observed generation and the conditions. A finished
// rollout keeps its phase.
func (p *planner) finish() {
	p.status.ObservedGeneration = p.obs.Generation
	v := p.verdict()
	if v.phase != p.oldPhase {
		p.notes = append(p.notes, Note{From: string(p.oldPhase), To: string(v.phase), Reason: v.reason, Message: v.message})
	}
	p.status.Phase = v.phase
	p.phase = v.phase
	setConditions(&p.status, p.obs.Generation, p.now, v)
}

func (p *planner) verdict() verdict {
	counts := map[v1alpha1.NamespaceRolloutState]int{}
	var flying, unconfirmed []string
	var failed *v1alpha1.NamespaceRolloutStatus
	for _, e := range p.entries {
		counts[e.State]++
		if inFlight(e.State) && p.selected[e.Name] {
			flying = append(flying, e.Name)
		}
		// A rollback is waited for only while it can still happen: see rollbackDone.
		if e.State == v1alpha1.NamespaceRolledBack && !p.rollbackDone(e) {
			unconfirmed = append(unconfirmed, e.Name)
		}
		if failedState(e.State) && (failed == nil || e.State == v1alpha1.NamespaceFailed && failed.State != v1alpha1.NamespaceFailed) {
			failed = e
		}
	}
	summary := p.summary(counts)

	if Finished(p.oldPhase) {
		return p.finished(p.oldPhase, failed, summary)
	}
	if p.obs.SelectorError != "" {
		return verdict{phase: v1alpha1.RolloutPending, reason: v1alpha1.RolloutReasonInvalidSelector, stalled: true,
			message: "spec.namespaceSelector: " + p.obs.SelectorError}
	}
	active := len(p.entries) - counts[v1alpha1.NamespaceRemoved]
	switch {
	case active == 0:
		return verdict{phase: v1alpha1.RolloutPending, reason: v1alpha1.RolloutReasonNoNamespaces, stalled: true,
			message: "spec.namespaceSelector selects no namespace; label the namespaces to move, or fix the selector"}
	case failed != nil && len(flying) == 0 && len(unconfirmed) == 0:
		phase := v1alpha1.RolloutRolledBack
		if counts[v1alpha1.NamespaceFailed] > 0 {
			phase = v1alpha1.RolloutFailed
		}
		return p.finished(phase, failed, summary)
	case failed == nil && len(flying) == 0 && counts[v1alpha1.NamespacePending]+counts[v1alpha1.NamespaceWaiting] == 0:
		return p.finished(v1alpha1.RolloutSucceeded, nil, summary)
	case len(p.obs.Overlaps) > 0 && len(flying) == 0:
		return verdict{phase: v1alpha1.RolloutPending, reason: v1alpha1.RolloutReasonOverlap,
			message: fmt.Sprintf("waiting for MTLSRollout %s, which selects some of the same namespaces, to finish", strings.Join(p.obs.Overlaps, ", "))}
	case p.paused:
		msg := "paused (spec.paused): no namespace is promoted until it is false"
		if len(flying) > 0 {
			msg += "; " + strings.Join(flying, ", ") + " finishes its soak"
		}
		return verdict{phase: v1alpha1.RolloutPaused, reason: v1alpha1.RolloutReasonPaused, message: msg + "; " + summary}
	case p.stalledBySidecars:
		return verdict{phase: v1alpha1.RolloutProgressing, reason: v1alpha1.RolloutReasonPodsWithoutSidecar, stalled: true,
			message: "no namespace can be promoted until its meshed pods without a sidecar are recreated; " + summary}
	case len(p.rollbackStuck) > 0:
		return verdict{phase: v1alpha1.RolloutProgressing, reason: v1alpha1.RolloutReasonRollbackNotApplied, stalled: true,
			message: strings.Join(p.rollbackStuck, "; ") + "; " + summary}
	case len(p.notReady) > 0:
		// The rollout keeps waiting; Stalled tells tools and people that it needs
		// someone, and clears when the namespace moves.
		return verdict{phase: v1alpha1.RolloutProgressing, reason: v1alpha1.RolloutReasonNamespaceNotReady, stalled: true,
			message: strings.Join(p.notReady, "; ") + "; " + summary}
	case len(flying) > 0 || len(unconfirmed) > 0:
		msg := summary
		if failed != nil {
			msg = fmt.Sprintf("stopping after %s failed: waiting for the namespaces in flight; %s", failed.Name, summary)
		}
		return verdict{phase: v1alpha1.RolloutProgressing, reason: v1alpha1.RolloutReasonPromoting, message: msg}
	default:
		return verdict{phase: v1alpha1.RolloutProgressing, reason: v1alpha1.RolloutReasonWaiting, message: summary}
	}
}

func (p *planner) finished(phase v1alpha1.RolloutPhase, failed *v1alpha1.NamespaceRolloutStatus, summary string) verdict {
	switch phase {
	case v1alpha1.RolloutSucceeded:
		var partly []string
		for _, e := range p.entries {
			if e.State == v1alpha1.NamespaceSucceeded && e.Reason == "WorkloadExceptions" {
				partly = append(partly, e.Name+" ("+e.Message+")")
			}
		}
		if len(partly) > 0 {
			return verdict{phase: phase, reason: v1alpha1.RolloutReasonSucceeded, message: fmt.Sprintf(
				"every selected namespace's policy is %s and soaked, but WorkloadMTLSPolicies keep some pods weaker: %s; %s", p.target, strings.Join(partly, "; "), summary)}
		}
		return verdict{phase: phase, reason: v1alpha1.RolloutReasonSucceeded, message: fmt.Sprintf("every selected namespace is %s: %s", p.target, summary)}
	case v1alpha1.RolloutRolledBack, v1alpha1.RolloutFailed:
		reason := v1alpha1.RolloutReasonRolledBack
		if phase == v1alpha1.RolloutFailed {
			reason = v1alpha1.RolloutReasonFailed
		}
		msg := summary
		if failed != nil {
			what := "was rolled back"
			if failed.State == v1alpha1.NamespaceFailed {
				what = "failed"
			}
			msg = fmt.Sprintf("namespace %s %s: %s; %s. Fix the clients, then create a new MTLSRollout", failed.Name, what, failed.Message, summary)
		}
		return verdict{phase: phase, reason: reason, stalled: true, message: msg}
	}
	return verdict{phase: phase, reason: string(phase), message: summary}
}

// summaryOrder is the order in which summary lists the states.
var summaryOrder = []v1alpha1.NamespaceRolloutState{
	v1alpha1.NamespacePromoted, v1alpha1.NamespaceSoaking, v1alpha1.NamespaceWaiting, v1alpha1.NamespacePending,
	v1alpha1.NamespaceSucceeded, v1alpha1.NamespaceSkipped, v1alpha1.NamespaceRolledBack, v1alpha1.NamespaceFailed,
	v1alpha1.NamespaceRemoved,
}

// summary renders "1 promoted (shop-a), 2 waiting, 3 succeeded of 6 namespaces".
func (p *planner) summary(counts map[v1alpha1.NamespaceRolloutState]int) string {
	var parts []string
	for _, s := range summaryOrder {
		n := counts[s]
		if n == 0 {
			continue
		}
		part := fmt.Sprintf("%d %s", n, stateWords[s])
		if inFlight(s) {
			var names []string
			for _, e := range p.entries {
				if e.State == s {
					names = append(names, e.Name)
				}
			}
			part += " (" + nameFew(names) + ")"
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return "no namespaces"
	}
	if len(p.entries) == 1 {
		return strings.Join(parts, ", ") + " of 1 namespace"
	}
	return fmt.Sprintf("%s of %d namespaces", strings.Join(parts, ", "), len(p.entries))
}

// stateWords are the states as a sentence says them.
var stateWords = map[v1alpha1.NamespaceRolloutState]string{
	v1alpha1.NamespacePending: "pending", v1alpha1.NamespaceWaiting: "waiting", v1alpha1.NamespacePromoted: "promoted",
	v1alpha1.NamespaceSoaking: "soaking", v1alpha1.NamespaceSucceeded: "succeeded", v1alpha1.NamespaceSkipped: "skipped",
	v1alpha1.NamespaceRolledBack: "rolled back", v1alpha1.NamespaceFailed: "failed", v1alpha1.NamespaceRemoved: "removed",
}

// setConditions sets Ready, Progressing, Reconciling and Stalled from the verdict, the
// kstatus way: Ready is True only once the rollout Succeeded; Reconciling mirrors
// Progressing so that kstatus reports a running rollout as InProgress; Stalled is True
// when only a user can move it on (and on failure, so that tools stop waiting).
func setConditions(s *v1alpha1.MTLSRolloutStatus, generation int64, now time.Time, v verdict) {
	t := metav1.NewTime(now)
	set := func(typ string, ok bool, reason, message string) {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{
			Type: typ, Status: st, Reason: reason, Message: truncateCondition(message), ObservedGeneration: generation, LastTransitionTime: t,
		})
	}
	progressing := v.phase == v1alpha1.RolloutProgressing && !v.stalled
	set(v1alpha1.ConditionReady, v.phase == v1alpha1.RolloutSucceeded, v.reason, v.message)
	set(v1alpha1.ConditionProgressing, progressing, v.reason, v.message)
	set(v1alpha1.ConditionReconciling, progressing, v.reason, v.message)
	set(v1alpha1.ConditionStalled, v.stalled, v.reason, v.message)
}

func truncateCondition(s string) string {
	const limit = 32768 // metav1.Condition's MaxLength
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
