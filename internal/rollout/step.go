package rollout

import (
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// The state machine of one namespace. Every arrow is taken by Step, and each is
// written to the status before its action is carried out, so a restarted operator
// picks up exactly where the last one left off (see Step).
//
//	             selected
//	                |
//	                v          its turn, not ready
//	            Pending  <-------------------------> Waiting
//	            |  |  |  turn over (slot taken,        |
//	            |  |  |  paused, rollout stopped)      | every pod applied, certificates
//	            |  |  |                                | ready, no plaintext in window
//	            |  |  +--------------------------------+---------+
//	  already   |  |                                             v
//	  at target |  |                              Promoted (spec.mode written)
//	            v  |                                 |  ^           |
//	       Skipped |                every pod applied|  | mode changed by someone else
//	               |                the target mode  v  |           |
//	               |                              Soaking           |
//	               |                                 |              | rejectedPlaintext rose
//	               |          soakDuration clean     |              +---------+----------+
//	               |                                 v              v         v          |
//	               |                             Succeeded     RolledBack   Failed <-----+
//	               |                                          (rollbackOnFailure)  (otherwise)
//	               v
//	  no longer selected before it finished: Removed (left as it is); selected again: Pending
//
// The rollout's phase follows from its namespaces: Pending (nothing selected, or an
// older rollout overlaps), Progressing, Paused, then one of Succeeded, RolledBack or
// Failed; a finished rollout never moves again.

// ActionType is what the controller must do to the cluster.
type ActionType string

const (
	// Promote writes spec.mode (the target mode) into the namespace's
	// NamespaceMTLSPolicy "default", creating it if missing.
	Promote ActionType = "Promote"
	// Rollback writes spec.mode (the mode recorded before promotion) back, or
	// deletes the policy when the rollout created it (Delete).
	Rollback ActionType = "Rollback"
	// Settle writes spec.mode (the target mode) again without the promotion marks:
	// the namespace soaked, and a later rollout may skip it.
	Settle ActionType = "Settle"
)

// Action is one write the controller must make. Actions are idempotent: the same
// action may come again when its effect has not been observed yet.
type Action struct {
	Type      ActionType
	Namespace string
	Mode      v1alpha1.Mode
	// Repeat: the decision was recorded in an earlier step, but the cluster does not
	// show its effect (the operator stopped between the two, or someone changed it).
	Repeat bool
	// Previous is the mode before promotion; a Promote writes it into the
	// meshtls.io/previous-mode annotation with meshtls.io/promoted-by and -at.
	Previous v1alpha1.Mode
	// Delete (Rollback only): the rollout created the policy; delete it when no one
	// else has set a field of it, else write Mode.
	Delete bool
}

func (a Action) String() string {
	s := fmt.Sprintf("%s %s to %s", a.Type, a.Namespace, a.Mode)
	if a.Delete {
		s += " or delete the policy it created"
	}
	if a.Repeat {
		s += " (again)"
	}
	return s
}

// Note records one decision and why it was made. A note with From != To is a
// transition of a namespace (Namespace set) or of the rollout's phase.
type Note struct {
	Namespace string
	From, To  string
	Reason    string
	Message   string
}

func (n Note) String() string {
	who := "rollout"
	if n.Namespace != "" {
		who = n.Namespace
	}
	if n.From != n.To {
		from := n.From
		if from == "" {
			from = "(new)"
		}
		return fmt.Sprintf("%s: %s -> %s (%s): %s", who, from, n.To, n.Reason, n.Message)
	}
	return fmt.Sprintf("%s: %s (%s): %s", who, n.To, n.Reason, n.Message)
}

// Result is what Step decided.
type Result struct {
	// Status is the rollout's next status. The controller writes it before it carries
	// out Actions.
	Status v1alpha1.MTLSRolloutStatus
	// Actions are the writes to make, in order.
	Actions []Action
	// RequeueAt is when to step again although nothing changed (a soak ends, a
	// plaintext window closes); zero when only a change can move the rollout.
	RequeueAt time.Time
	// Notes say what was decided and why, in order.
	Notes []Note
}

// Defaults of the spec's optional fields (the schema sets them too).
const (
	DefaultSoakDuration     = 5 * time.Minute
	DefaultPlaintextWindow  = 10 * time.Minute
	DefaultProgressDeadline = 30 * time.Minute
)

// maxSoakRestarts is how many times someone else may change spec.mode of a promoted
// namespace, restarting its soak, before the namespace fails with ModeContested.
const maxSoakRestarts = 3

// rollbackGrace is how long a rollback write may take to show before the rollout says
// it is stalled on it.
const rollbackGrace = time.Minute

// Needs names the selected namespaces whose pods Step will look at: those in flight,
// and, when a promotion slot is free (or frees up now), those waiting for their turn.
// Reading pods costs API calls, so the controller reads only these.
func Needs(spec v1alpha1.MTLSRolloutSpec, status v1alpha1.MTLSRolloutStatus, obs Observation, now time.Time) []string {
	if Finished(status.Phase) || obs.SelectorError != "" {
		return nil
	}
	p := newPlanner(spec, status, obs, now)
	p.membership()
	free := p.maxConcurrent
	for _, e := range p.entries {
		if e.State == v1alpha1.NamespaceSoaking && !p.now.Before(e.Since.Add(p.soak)) {
			continue // finishes this step
		}
		if inFlight(e.State) {
			free--
		}
	}
	start := free > 0 && p.mayStart()
	var out []string
	for _, e := range p.entries {
		if !p.selected[e.Name] {
			continue
		}
		if inFlight(e.State) || (notStarted(e.State) && p.marked(e)) || (start && notStarted(e.State) && !p.atTarget(e)) {
			out = append(out, e.Name)
		}
	}
	return out
}

// Step decides the next status and actions of a rollout from its spec, its current
// status and what the controller observed at now. It is pure: everything it knows is
// in its arguments, and everything it remembers is in the status it returns.
//
// Every decision is recorded in the status before the controller acts on it, and the
// actions of recorded states are repeated until the cluster shows them: a Promoted or
// Soaking namespace whose policy is not at the target mode is promoted again; a
// RolledBack namespace whose policy is not back at its previous mode is rolled back
// again. So an operator stopped at any point, and started again, neither repeats a
// step (the status says it was taken) nor skips one (its effect is checked).
func Step(spec v1alpha1.MTLSRolloutSpec, status v1alpha1.MTLSRolloutStatus, obs Observation, now time.Time) Result {
	p := newPlanner(spec, status, obs, now)
	if Finished(status.Phase) {
		// A finished rollout is a record: nothing moves, not even namespaces that are
		// selected later.
		p.finish()
		return p.result()
	}
	if obs.SelectorError != "" {
		p.finish()
		return p.result()
	}
	p.membership()
	p.inFlight()
	p.notStarted()
	p.finish()
	return p.result()
}

type planner struct {
	obs           Observation
	now           time.Time
	target        v1alpha1.Mode
	maxConcurrent int
	soak, window  time.Duration
	deadline, lag time.Duration
	rollback      bool
	paused        bool

	oldPhase v1alpha1.RolloutPhase
	phase    v1alpha1.RolloutPhase
	status   v1alpha1.MTLSRolloutStatus
	entries  []*v1alpha1.NamespaceRolloutStatus // sorted by name
	selected map[string]bool

	actions   []Action
	notes     []Note
	requeueAt time.Time
	// stalled is set by notStarted when only a user can unblock the rollout.
	stalledBySidecars bool
	// notReady: namespaces waiting longer than progressDeadline, and why.
	notReady []string
	// rollbackStuck: rolled-back namespaces whose rollback does not show.
	rollbackStuck []string
}

func newPlanner(spec v1alpha1.MTLSRolloutSpec, status v1alpha1.MTLSRolloutStatus, obs Observation, now time.Time) *planner {
	p := &planner{
		obs: obs,
		// Status times are stored to the second; deciding on the same precision keeps
		// a step after a restart identical to one without.
		now:           now.Truncate(time.Second),
		target:        spec.TargetMode,
		maxConcurrent: int(spec.MaxConcurrent),
		soak:          DefaultSoakDuration,
		window:        DefaultPlaintextWindow,
		deadline:      DefaultProgressDeadline,
		lag:           obs.ReportLag,
		rollback:      spec.RollbackOnFailure == nil || *spec.RollbackOnFailure,
		paused:        spec.Paused,
		oldPhase:      status.Phase,
		status:        *status.DeepCopy(),
		selected:      map[string]bool{},
	}
	if p.target == "" {
		p.target = v1alpha1.ModeStrict
	}
	if p.maxConcurrent < 1 {
		p.maxConcurrent = 1
	}
	if spec.SoakDuration != nil {
		p.soak = spec.SoakDuration.Duration
	}
	if spec.PlaintextWindow != nil {
		p.window = spec.PlaintextWindow.Duration
	}
	if spec.ProgressDeadline != nil {
		p.deadline = spec.ProgressDeadline.Duration
	}
	if p.lag <= 0 {
		p.lag = DefaultReportLag
	}
	for _, ns := range obs.Selected {
		p.selected[ns] = true
	}
	for i := range p.status.Namespaces {
		p.entries = append(p.entries, &p.status.Namespaces[i])
	}
	return p
}

func inFlight(s v1alpha1.NamespaceRolloutState) bool {
	return s == v1alpha1.NamespacePromoted || s == v1alpha1.NamespaceSoaking
}

func notStarted(s v1alpha1.NamespaceRolloutState) bool {
	return s == v1alpha1.NamespacePending || s == v1alpha1.NamespaceWaiting
}

func failedState(s v1alpha1.NamespaceRolloutState) bool {
	return s == v1alpha1.NamespaceRolledBack || s == v1alpha1.NamespaceFailed
}

// mode is the namespace policy's spec.mode, UNSET without a policy.
func (p *planner) mode(ns string) v1alpha1.Mode {
	if m, ok := p.obs.Modes[ns]; ok && m != "" {
		return m
	}
	return v1alpha1.ModeUnset
}

// effective is the namespace's mode after inheritance and the mesh floor, as the
// resolver computes it, and why.
func (p *planner) effective(ns string) (v1alpha1.Mode, string) {
	m, why := p.mode(ns), "its NamespaceMTLSPolicy says so"
	if m == v1alpha1.ModeUnset {
		m, why = p.obs.Mesh.Mode, "inherited from the MeshMTLSPolicy"
		if m == "" {
			m, why = v1alpha1.MeshDefaultMode, "the mesh default"
		}
	}
	if floor := p.obs.Mesh.MinimumMode; floor != "" && policy.Weaker(m, floor) {
		m, why = floor, "raised to the mesh minimumMode"
	}
	return m, why
}

// atTarget: a namespace the rollout has not promoted that is at the target mode
// already, whatever makes it so.
func (p *planner) atTarget(e *v1alpha1.NamespaceRolloutStatus) bool {
	m, _ := p.effective(e.Name)
	return e.PreviousMode == "" && m == p.target && !p.marked(e)
}

// marked: a rollout (an earlier one, or this one before it was re-created) promoted
// the namespace and it has not soaked yet; its soak must be resumed, not skipped.
func (p *planner) marked(e *v1alpha1.NamespaceRolloutStatus) bool {
	_, ok := p.obs.Marks[e.Name]
	return ok && e.PreviousMode == "" && p.mode(e.Name) == p.target
}

// exists: the namespace has a NamespaceMTLSPolicy "default".
func (p *planner) exists(ns string) bool {
	_, ok := p.obs.Modes[ns]
	return ok
}

// belowFloor: the mode is weaker than the mesh minimumMode, so admission refuses it.
func (p *planner) belowFloor(m v1alpha1.Mode) bool {
	floor := p.obs.Mesh.MinimumMode
	return floor != "" && m != "" && m != v1alpha1.ModeUnset && policy.Weaker(m, floor)
}

// rollbackDone: a rolled-back namespace needs nothing more: the write succeeded, the
// mode shows it, the namespace is no longer selected, or the mesh floor forbids the
// previous mode.
func (p *planner) rollbackDone(e *v1alpha1.NamespaceRolloutStatus) bool {
	return e.RolledBackAt != nil || !p.selected[e.Name] || p.mode(e.Name) == e.PreviousMode || p.belowFloor(e.PreviousMode)
}

// remember keeps the namespace's latest plaintext in its status: a deleted pod takes
// its lastPlaintextTime with it, the evidence must stay.
func (p *planner) remember(e *v1alpha1.NamespaceRolloutStatus, pods []Pod) {
	for i := range pods {
		pod := &pods[i]
		if pod.LastPlaintext.IsZero() || (e.LastPlaintextTime != nil && !pod.LastPlaintext.After(e.LastPlaintextTime.Time)) {
			continue
		}
		t := metav1.NewTime(pod.LastPlaintext.Truncate(time.Second))
		e.LastPlaintextTime, e.LastPlaintextPod = &t, pod.Name
	}
}

func (p *planner) env(e *v1alpha1.NamespaceRolloutStatus) *checkEnv {
	env := &checkEnv{now: p.now, window: p.window, lag: p.lag}
	if e.LastPlaintextTime != nil {
		env.last, env.lastPod = e.LastPlaintextTime.Time, e.LastPlaintextPod
	}
	return env
}

// overDeadline records a namespace whose turn came longer than progressDeadline ago
// and that has not moved since, or asks to be woken when it will be.
func (p *planner) overDeadline(e *v1alpha1.NamespaceRolloutStatus, why string) {
	if e.Since == nil {
		return
	}
	at := e.Since.Add(p.deadline)
	if p.now.Before(at) {
		p.wake(at)
		return
	}
	p.notReady = append(p.notReady, fmt.Sprintf("namespace %s has been %s for %s (progressDeadline %s): %s",
		e.Name, stateWords[e.State], human(p.now.Sub(e.Since.Time)), human(p.deadline), why))
}

func (p *planner) halted() (string, bool) {
	for _, e := range p.entries {
		if failedState(e.State) {
			return e.Name, true
		}
	}
	return "", false
}

// mayStart reports whether a not-started namespace may be promoted now, slots aside.
func (p *planner) mayStart() bool {
	_, halted := p.halted()
	return !p.paused && !halted && len(p.obs.Overlaps) == 0
}

func (p *planner) since() *metav1.Time {
	t := metav1.NewTime(p.now)
	return &t
}

func (p *planner) set(e *v1alpha1.NamespaceRolloutStatus, to v1alpha1.NamespaceRolloutState, reason, message string) {
	if e.State != to {
		p.notes = append(p.notes, Note{Namespace: e.Name, From: string(e.State), To: string(to), Reason: reason, Message: message})
		e.State, e.Since = to, p.since()
	}
	e.Reason = reason
	e.Message = truncate(message)
}

func (p *planner) wake(at time.Time) {
	if !at.IsZero() && (p.requeueAt.IsZero() || at.Before(p.requeueAt)) {
		p.requeueAt = at
	}
}

// membership adds newly selected namespaces as Pending and marks those no longer
// selected that had not finished as Removed: the rollout leaves them as they are.
func (p *planner) membership() {
	known := map[string]bool{}
	for _, e := range p.entries {
		known[e.Name] = true
		switch {
		case p.selected[e.Name] && e.State == v1alpha1.NamespaceRemoved:
			p.set(e, v1alpha1.NamespacePending, "Selected", "selected again")
		case p.selected[e.Name]:
		case notStarted(e.State):
			p.set(e, v1alpha1.NamespaceRemoved, "NotSelected", "no longer selected before its turn; not changed")
		case inFlight(e.State):
			p.set(e, v1alpha1.NamespaceRemoved, "NotSelected", fmt.Sprintf(
				"no longer selected while %s; left at %s (was %s), its soak not finished", stateWords[e.State], p.target, e.PreviousMode))
			e.RejectedPlaintextAtPromotion = nil
		}
	}
	for _, ns := range p.obs.Selected {
		if !known[ns] {
			p.status.Namespaces = append(p.status.Namespaces, v1alpha1.NamespaceRolloutStatus{Name: ns})
			known[ns] = true
		}
	}
	sort.Slice(p.status.Namespaces, func(i, j int) bool { return p.status.Namespaces[i].Name < p.status.Namespaces[j].Name })
	p.entries = p.entries[:0]
	for i := range p.status.Namespaces {
		e := &p.status.Namespaces[i]
		p.entries = append(p.entries, e)
		if e.State == "" {
			p.set(e, v1alpha1.NamespacePending, "Selected", "selected")
		}
	}
}

// inFlight moves the promoted namespaces on: through the pods' applying the target
// mode, the soak, and failure; and repeats what the cluster does not show yet.
func (p *planner) inFlight() {
	for _, e := range p.entries {
		if !p.selected[e.Name] {
			continue
		}
		switch e.State {
		case v1alpha1.NamespacePromoted, v1alpha1.NamespaceSoaking:
			pods, observed := p.obs.Pods[e.Name]
			if !observed {
				continue // not looked at this step: nothing to decide on
			}
			if r := rises(e.RejectedPlaintextAtPromotion, pods); r.total > 0 {
				p.fail(e, r)
				continue
			}
			if m := p.mode(e.Name); m != p.target {
				if e.State == v1alpha1.NamespaceSoaking && e.SoakRestarts >= maxSoakRestarts {
					p.contested(e, m)
					continue
				}
				p.actions = append(p.actions, Action{Type: Promote, Namespace: e.Name, Mode: p.target, Previous: e.PreviousMode, Repeat: true})
				if e.State == v1alpha1.NamespaceSoaking {
					e.SoakRestarts++
					p.set(e, v1alpha1.NamespacePromoted, "ModeChanged", fmt.Sprintf(
						"spec.mode was changed to %s%s during the soak; writing %s again, the soak starts over (restart %d of %d)",
						m, p.writer(e.Name), p.target, e.SoakRestarts, maxSoakRestarts))
				} else {
					e.Message = truncate(fmt.Sprintf("writing spec.mode %s (was %s)", p.target, e.PreviousMode))
				}
				continue
			}
			if e.State == v1alpha1.NamespacePromoted {
				p.promoted(e, pods)
			} else {
				p.soaking(e, pods)
			}
		case v1alpha1.NamespaceRolledBack:
			switch {
			case p.rollbackDone(e):
				if e.RolledBackAt == nil && p.belowFloor(e.PreviousMode) && e.Reason != "BelowMinimumMode" {
					p.set(e, e.State, "BelowMinimumMode", truncate(fmt.Sprintf(
						"%s; the mesh minimumMode %s forbids its previous mode %s, so it stays %s (the floor wins)",
						e.Message, p.obs.Mesh.MinimumMode, e.PreviousMode, p.obs.Mesh.MinimumMode)))
				}
			default:
				p.actions = append(p.actions, Action{Type: Rollback, Namespace: e.Name, Mode: e.PreviousMode, Delete: e.CreatedPolicy, Repeat: true})
				if at := e.Since.Add(rollbackGrace); p.now.Before(at) {
					p.wake(at)
				} else {
					p.rollbackStuck = append(p.rollbackStuck, fmt.Sprintf("namespace %s: spec.mode is %s, not its previous mode %s, %s after the rollback; the write has not succeeded (see the RollbackFailed events)",
						e.Name, p.mode(e.Name), e.PreviousMode, human(p.now.Sub(e.Since.Time))))
				}
			}
		case v1alpha1.NamespaceSucceeded:
			if _, ok := p.obs.Marks[e.Name]; ok && p.mode(e.Name) == p.target {
				p.actions = append(p.actions, Action{Type: Settle, Namespace: e.Name, Mode: p.target, Repeat: true})
			}
		}
	}
}

func (p *planner) promoted(e *v1alpha1.NamespaceRolloutStatus, pods []Pod) {
	var pending []string
	live := 0
	for i := range pods {
		pod := &pods[i]
		if pod.Config && pod.SidecarMissing {
			continue // nothing to apply: no proxy
		}
		live++
		if !pod.follows(p.target) || !pod.Applied {
			pending = append(pending, pod.Name)
		}
	}
	if len(pending) > 0 {
		e.Message = truncate(fmt.Sprintf("spec.mode is %s; %s not applied it yet: %s",
			p.target, ofPods(len(pending), live, "has", "have"), nameFew(pending)))
		p.overDeadline(e, e.Message)
		return
	}
	p.set(e, v1alpha1.NamespaceSoaking, "Applied", fmt.Sprintf("every pod applied %s; soaking, %s left", p.target, human(p.soak)))
	p.wake(p.now.Add(p.soak))
}

func (p *planner) soaking(e *v1alpha1.NamespaceRolloutStatus, pods []Pod) {
	end := e.Since.Add(p.soak)
	exceptions := p.exceptions(pods)
	if p.now.Before(end) {
		msg := fmt.Sprintf("soaking, %s left; no plaintext rejected so far", human(end.Sub(p.now)))
		if exceptions != "" {
			msg += "; " + exceptions
		}
		e.Message = truncate(msg)
		p.wake(end)
		return
	}
	if exceptions != "" {
		// Succeeded says the namespace policy is at the target and soaked, not that
		// every pod is: say which are not, plainly.
		p.set(e, v1alpha1.NamespaceSucceeded, "WorkloadExceptions", fmt.Sprintf("%s except %s; soaked %s with no plaintext rejected (was %s)",
			p.target, strings.TrimPrefix(exceptions, "except "), human(p.soak), e.PreviousMode))
	} else {
		p.set(e, v1alpha1.NamespaceSucceeded, "Soaked", fmt.Sprintf("%s for %s with no plaintext rejected (was %s)", p.target, human(p.soak), e.PreviousMode))
	}
	e.RejectedPlaintextAtPromotion = nil
	p.actions = append(p.actions, Action{Type: Settle, Namespace: e.Name, Mode: p.target})
}

// exceptions names the pods a WorkloadMTLSPolicy keeps weaker than the target:
// "except 3 pods kept PERMISSIVE by WorkloadMTLSPolicy legacy"; "" when none.
func (p *planner) exceptions(pods []Pod) string {
	type key struct {
		mode   v1alpha1.Mode
		policy string
	}
	count := map[key]int{}
	var keys []key
	for i := range pods {
		pod := &pods[i]
		if !pod.WorkloadDecides || !policy.Weaker(pod.WorkloadMode, p.target) {
			continue
		}
		k := key{pod.WorkloadMode, pod.WorkloadPolicy}
		if count[k] == 0 {
			keys = append(keys, k)
		}
		count[k]++
	}
	if len(keys) == 0 {
		return ""
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].policy != keys[j].policy {
			return keys[i].policy < keys[j].policy
		}
		return keys[i].mode < keys[j].mode
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		n := count[k]
		noun := "pods"
		if n == 1 {
			noun = "pod"
		}
		parts[i] = fmt.Sprintf("%d %s kept %s by WorkloadMTLSPolicy %s", n, noun, k.mode, k.policy)
	}
	return "except " + strings.Join(parts, ", ")
}

// writer says who last wrote spec.mode, when known: " by kubectl-edit".
func (p *planner) writer(ns string) string {
	if w := p.obs.ModeWriters[ns]; w != "" {
		return " by " + w
	}
	return ""
}

// contested fails a namespace whose spec.mode someone else keeps changing: fighting
// over it would restart the soak forever and hold the promotion slot.
func (p *planner) contested(e *v1alpha1.NamespaceRolloutStatus, m v1alpha1.Mode) {
	last := "an unknown writer"
	if w := p.obs.ModeWriters[e.Name]; w != "" {
		last = "field manager " + w
	}
	p.set(e, v1alpha1.NamespaceFailed, v1alpha1.RolloutReasonModeContested, fmt.Sprintf(
		"spec.mode was changed away from %s after promotion %d times (now %s, last by %s); the rollout stops writing it. Make the other writer leave spec.mode alone (see docs/rollout.md, GitOps), then create a new MTLSRollout",
		p.target, e.SoakRestarts+1, m, last))
	e.RejectedPlaintextAtPromotion = nil
}

func (p *planner) fail(e *v1alpha1.NamespaceRolloutStatus, r rise) {
	why := fmt.Sprintf("rejectedPlaintext rose by %d after promotion (%s): a client still sends plaintext", r.total, nameFew(r.pods))
	if p.rollback {
		back := "spec.mode set back to " + string(e.PreviousMode)
		if e.CreatedPolicy {
			back = "the NamespaceMTLSPolicy the rollout created is deleted (unless someone else set a field of it since; then spec.mode set back to UNSET)"
		}
		p.set(e, v1alpha1.NamespaceRolledBack, "PlaintextRejected", fmt.Sprintf("%s; %s", why, back))
		p.actions = append(p.actions, Action{Type: Rollback, Namespace: e.Name, Mode: e.PreviousMode, Delete: e.CreatedPolicy})
	} else {
		p.set(e, v1alpha1.NamespaceFailed, "PlaintextRejected", fmt.Sprintf("%s; left at %s (rollbackOnFailure is false)", why, p.target))
	}
	e.RejectedPlaintextAtPromotion = nil
}

// notStarted looks at the namespaces whose turn has not come, in name order: skips
// those at the target mode already, and promotes the ready ones while slots are free.
func (p *planner) notStarted() {
	free := p.maxConcurrent
	var flying []string
	for _, e := range p.entries {
		if p.selected[e.Name] && inFlight(e.State) {
			free--
			flying = append(flying, fmt.Sprintf("%s is %s", e.Name, stateWords[e.State]))
		}
	}
	failedNS, halted := p.halted()
	considered, blockedByUser := 0, 0
	for _, e := range p.entries {
		if !p.selected[e.Name] || !notStarted(e.State) {
			continue
		}
		if m, why := p.effective(e.Name); p.atTarget(e) {
			p.set(e, v1alpha1.NamespaceSkipped, "AlreadyAtTarget", fmt.Sprintf("already %s (%s); left as it is", m, why))
			continue
		}
		if p.marked(e) {
			p.resume(e)
			continue
		}
		switch {
		case len(p.obs.Overlaps) > 0:
			p.set(e, v1alpha1.NamespacePending, "Overlap", fmt.Sprintf("waiting for MTLSRollout %s, which selects some of the same namespaces, to finish", strings.Join(p.obs.Overlaps, ", ")))
			continue
		case halted:
			p.set(e, v1alpha1.NamespacePending, "Stopped", fmt.Sprintf("not promoted: the rollout stopped after %s failed", failedNS))
			continue
		case p.paused:
			p.set(e, v1alpha1.NamespacePending, "Paused", "paused (spec.paused)")
			continue
		case free <= 0:
			p.set(e, v1alpha1.NamespacePending, "NoFreeSlot", fmt.Sprintf("waiting for a free slot (maxConcurrent %d): %s", p.maxConcurrent, strings.Join(flying, ", ")))
			continue
		}
		pods, observed := p.obs.Pods[e.Name]
		if !observed {
			p.set(e, v1alpha1.NamespacePending, "Turn", "its turn: looking at its pods")
			p.wake(p.now)
			continue
		}
		considered++
		p.remember(e, pods)
		if bs := blockers(pods, p.env(e)); len(bs) > 0 {
			msgs := make([]string, len(bs))
			needsUser := false
			for i, b := range bs {
				msgs[i] = b.message
				p.wake(b.until)
				needsUser = needsUser || b.needsUser
			}
			if needsUser {
				blockedByUser++
			}
			p.set(e, v1alpha1.NamespaceWaiting, "NotReady", strings.Join(msgs, "; "))
			p.overDeadline(e, e.Message)
			continue
		}
		p.promote(e, pods)
		free--
		flying = append(flying, e.Name+" is promoted")
	}
	p.stalledBySidecars = considered > 0 && blockedByUser == considered && free == p.maxConcurrent
}

func (p *planner) promote(e *v1alpha1.NamespaceRolloutStatus, pods []Pod) {
	if e.PreviousMode == "" {
		e.PreviousMode = p.mode(e.Name)
		e.CreatedPolicy = !p.exists(e.Name)
	}
	e.SoakRestarts = 0
	e.RejectedPlaintextAtPromotion = baselineOf(pods)
	why := fmt.Sprintf("every meshed pod (%d) applied its config, has a ready certificate, and saw no plaintext in %s", len(pods), human(p.window))
	if len(pods) == 0 {
		why = "no meshed pods"
	}
	p.set(e, v1alpha1.NamespacePromoted, "Ready", fmt.Sprintf("%s; writing spec.mode %s (was %s)", why, p.target, e.PreviousMode))
	p.actions = append(p.actions, Action{Type: Promote, Namespace: e.Name, Mode: p.target, Previous: e.PreviousMode})
}

// resume takes over a namespace that a rollout promoted and that had not soaked (its
// policy carries the promotion marks): a rollout deleted and created again mid-soak.
// It soaks again from now, with the previous mode the marks recorded, whatever the
// slots or spec.paused say: the namespace is promoted already.
func (p *planner) resume(e *v1alpha1.NamespaceRolloutStatus) {
	pods, observed := p.obs.Pods[e.Name]
	if !observed {
		p.set(e, v1alpha1.NamespacePending, "Turn", "promoted by an earlier rollout and not soaked: looking at its pods")
		p.wake(p.now)
		return
	}
	mark := p.obs.Marks[e.Name]
	e.PreviousMode = mark.PreviousMode
	if e.PreviousMode == "" {
		e.PreviousMode = v1alpha1.ModeUnset
	}
	e.SoakRestarts = 0
	e.RejectedPlaintextAtPromotion = baselineOf(pods)
	p.set(e, v1alpha1.NamespaceSoaking, "ResumedSoak", fmt.Sprintf("promoted by MTLSRollout %s at %s (was %s) and not soaked: soaking again, %s left",
		mark.By, mark.At.UTC().Format(time.RFC3339), e.PreviousMode, human(p.soak)))
	p.wake(p.now.Add(p.soak))
}

func (p *planner) result() Result {
	return Result{Status: p.status, Actions: p.actions, RequeueAt: p.requeueAt, Notes: p.notes}
}

func truncate(s string) string {
	const limit = 1024 // the schema's MaxLength
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
