package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/metrics"
	"github.com/meshtls/meshtls-operator/internal/policy"
	"github.com/meshtls/meshtls-operator/internal/rollout"
)

// RolloutFieldManager is the server-side apply field manager of the rollout's writes
// to NamespaceMTLSPolicy spec.mode: GitOps tools ignore the fields it owns.
const RolloutFieldManager = "meshtls-rollout"

// The rollout controller reads PodProxyConfigs with their status (from the API: the
// cache drops it) and writes spec.mode of NamespaceMTLSPolicies, creating them.
//
// +kubebuilder:rbac:groups=security.meshtls.io,resources=namespacemtlspolicies,verbs=create;patch;delete

// MTLSRolloutReconciler moves the namespaces an MTLSRollout selects to its target mode
// one step at a time, and back when they break. Every decision is rollout.Step's; this
// reconciler gathers what Step needs, writes the status Step returns, and only then
// carries out Step's actions, so a manager stopped at any moment continues where it
// left off.
//
// It watches MTLSRollouts; Namespaces (the selection); NamespaceMTLSPolicies and the
// MeshMTLSPolicy (the modes); and PodProxyConfigs (what the proxies report, coalesced).
// It writes the MTLSRollout status, of which it is the only writer, and spec.mode of
// NamespaceMTLSPolicy "default" with server-side apply as field manager
// meshtls-rollout, recording an Event for each promotion and rollback.
type MTLSRolloutReconciler struct {
	// Client reads from the manager's cache and writes to the API.
	Client client.Client
	// Reader reads PodProxyConfigs from the API, with the status the cache drops.
	Reader client.Reader
	// Index says which pods are meshed.
	Index    *policy.Index
	Recorder recorder.EventRecorder
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Poll is how often an unfinished rollout looks again although nothing woke it
	// (a proxy that stopped reporting); one minute when zero.
	Poll time.Duration
	// ProxyDelay coalesces PodProxyConfig changes into one step; two seconds when zero.
	ProxyDelay time.Duration
	// ProxyReportInterval is how late a proxy may report a plaintext connection (it
	// writes counters at most once a minute); rollout.DefaultReportLag when zero.
	ProxyReportInterval time.Duration
}

// SetupWithManager registers the reconciler.
func (r *MTLSRolloutReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Poll <= 0 {
		r.Poll = time.Minute
	}
	if r.ProxyDelay <= 0 {
		r.ProxyDelay = 2 * time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("mtlsrollout").
		// Its own status writes do not bring it back.
		For(&v1alpha1.MTLSRollout{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, r.wakeAll(func(old, obj client.Object) bool {
			return !maps.Equal(old.GetLabels(), obj.GetLabels()) || old.GetDeletionTimestamp() != obj.GetDeletionTimestamp()
		})).
		Watches(&v1alpha1.NamespaceMTLSPolicy{}, r.wakeAll(generationChanged)).
		Watches(&v1alpha1.MeshMTLSPolicy{}, r.wakeAll(generationChanged)).
		Watches(&v1alpha1.PodProxyConfig{}, r.wakeForProxies()).
		Complete(r)
}

// Reconcile takes one step of the rollout req.Name.
func (r *MTLSRolloutReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ro := &v1alpha1.MTLSRollout{}
	if err := r.Client.Get(ctx, req.NamespacedName, ro); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.ForgetRollout(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to get MTLSRollout %s: %w", req.Name, err)
	}
	now := r.Now()

	obs, err := r.observe(ctx, ro, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	res := rollout.Step(ro.Spec, ro.Status, obs, now)

	// The status first: it records each decision before the cluster sees it. The
	// update carries the resourceVersion Step decided from, so a decision made on a
	// stale cached status (our previous write not seen yet) fails here, and its
	// actions are never carried out. Every new action comes with a change of status;
	// only the idempotent repeats of recorded decisions go without one.
	if !apiequality.Semantic.DeepEqual(ro.Status, res.Status) {
		ro.Status = res.Status
		if err := r.Client.Status().Update(ctx, ro, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				// Someone changed the rollout: decide again on the newer version
				// (its event brings it back), and act on nothing decided here.
				return ctrl.Result{RequeueAfter: time.Second}, nil
			}
			return ctrl.Result{}, fmt.Errorf("failed to update status of MTLSRollout %s: %w", ro.Name, err)
		}
	}

	var errs []error
	rolledBack := map[string]bool{}
	for _, a := range res.Actions {
		err := r.act(ctx, ro, a)
		errs = append(errs, err)
		if err == nil && a.Type == rollout.Rollback {
			rolledBack[a.Namespace] = true
		}
	}
	// A rollback write that succeeded is recorded: the rollback is done then, even if
	// spec.mode changes again later or the namespace leaves the selection.
	if len(rolledBack) > 0 {
		now := metav1.NewTime(r.Now().Truncate(time.Second))
		changed := false
		for i := range ro.Status.Namespaces {
			e := &ro.Status.Namespaces[i]
			if rolledBack[e.Name] && e.State == v1alpha1.NamespaceRolledBack && e.RolledBackAt == nil {
				e.RolledBackAt, changed = &now, true
			}
		}
		if changed {
			if err := r.Client.Status().Update(ctx, ro, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("failed to record the rollback in MTLSRollout %s: %w", ro.Name, err))
			}
		}
	}
	r.record(ctx, ro, res.Notes)
	metrics.ObserveRollout(ro.Name, string(ro.Status.Phase), states(ro.Status.Namespaces))
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}

	if rollout.Finished(ro.Status.Phase) {
		return ctrl.Result{}, nil
	}
	after := r.Poll
	if !res.RequeueAt.IsZero() {
		// Just past the time asked for (Step decides to the second), and never a
		// tight loop.
		if d := res.RequeueAt.Sub(r.Now()) + 50*time.Millisecond; d < after {
			after = max(d, 500*time.Millisecond)
		}
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// act carries out one action: server-side apply of spec.mode on the namespace's
// NamespaceMTLSPolicy "default" (created when missing). It takes spec.mode from
// whoever owned it (a GitOps tool, kubectl), which is the point of a rollout; the
// GitOps recipe in docs/rollout.md makes those tools leave it alone meanwhile.
func (r *MTLSRolloutReconciler) act(ctx context.Context, ro *v1alpha1.MTLSRollout, a rollout.Action) error {
	if a.Type == rollout.Rollback && a.Delete {
		deleted, err := r.deleteCreated(ctx, a.Namespace)
		if err != nil || deleted {
			result := "ok"
			if err != nil {
				result = "error"
				r.Recorder.Eventf(ro, nil, corev1.EventTypeWarning, "RollbackFailed", "Rollback",
					"namespace %s: failed to delete the NamespaceMTLSPolicy default the rollout created: %v", a.Namespace, err)
			}
			metrics.RolloutWrites.WithLabelValues(string(a.Type), result).Inc()
			return err
		}
	}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("NamespaceMTLSPolicy")
	u.SetNamespace(a.Namespace)
	u.SetName(v1alpha1.NamespaceMTLSPolicyName)
	if err := unstructured.SetNestedField(u.Object, string(a.Mode), "spec", "mode"); err != nil {
		return err
	}
	if a.Type == rollout.Promote {
		// Until the namespace has soaked, the policy says who promoted it, when, and
		// from what: a rollout re-created meanwhile resumes the soak instead of
		// skipping a namespace that merely looks STRICT. Settle and Rollback apply
		// without them, and server-side apply removes them.
		u.SetAnnotations(map[string]string{
			v1alpha1.AnnotationPromotedBy:   ro.Name,
			v1alpha1.AnnotationPromotedAt:   r.Now().UTC().Format(time.RFC3339),
			v1alpha1.AnnotationPreviousMode: string(a.Previous),
		})
		if a.Repeat {
			if at := r.promotedAt(ctx, a.Namespace); at != "" {
				ann := u.GetAnnotations()
				ann[v1alpha1.AnnotationPromotedAt] = at
				u.SetAnnotations(ann)
			}
		}
	}
	err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(RolloutFieldManager), client.ForceOwnership)
	result := "ok"
	if err != nil {
		result = "error"
	}
	metrics.RolloutWrites.WithLabelValues(string(a.Type), result).Inc()
	if err != nil {
		r.Recorder.Eventf(ro, nil, corev1.EventTypeWarning, string(a.Type)+"Failed", string(a.Type),
			"namespace %s: failed to write spec.mode %s of NamespaceMTLSPolicy default: %v", a.Namespace, a.Mode, err)
		return fmt.Errorf("failed to apply spec.mode %s to NamespaceMTLSPolicy %s/default (%s): %w", a.Mode, a.Namespace, a, err)
	}
	log.FromContext(ctx).Info("wrote spec.mode", "namespace", a.Namespace, "mode", a.Mode, "action", a.Type, "repeat", a.Repeat)
	return nil
}

// promotedAt is the promoted-at mark of the namespace's policy, "" when none.
func (r *MTLSRolloutReconciler) promotedAt(ctx context.Context, ns string) string {
	p := &v1alpha1.NamespaceMTLSPolicy{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1alpha1.NamespaceMTLSPolicyName}, p); err != nil {
		return ""
	}
	return p.Annotations[v1alpha1.AnnotationPromotedAt]
}

// deleteCreated deletes the NamespaceMTLSPolicy "default" the rollout created, when no
// one else has set a field of it since; it reports false (write the previous mode
// instead) when someone has. The delete is conditional on the version it checked.
func (r *MTLSRolloutReconciler) deleteCreated(ctx context.Context, ns string) (bool, error) {
	p := &v1alpha1.NamespaceMTLSPolicy{}
	if err := r.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1alpha1.NamespaceMTLSPolicyName}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("failed to get NamespaceMTLSPolicy %s/default: %w", ns, err)
	}
	if !ownedOnlyByRollout(p) {
		return false, nil
	}
	uid, rv := p.UID, p.ResourceVersion
	err := r.Client.Delete(ctx, p, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case err == nil || apierrors.IsNotFound(err):
		log.FromContext(ctx).Info("deleted the NamespaceMTLSPolicy the rollout created", "namespace", ns)
		return true, nil
	case apierrors.IsConflict(err):
		return false, fmt.Errorf("NamespaceMTLSPolicy %s/default changed while the rollback looked at it; trying again", ns)
	}
	return false, fmt.Errorf("failed to delete NamespaceMTLSPolicy %s/default: %w", ns, err)
}

// eventReasons are the Event reasons of the namespace transitions worth an Event, and
// whether each is a warning. Pending and Waiting come and go; their messages are in
// the status.
var eventReasons = map[v1alpha1.NamespaceRolloutState]struct {
	reason  string
	warning bool
}{
	v1alpha1.NamespacePromoted:   {"Promoted", false},
	v1alpha1.NamespaceSoaking:    {"Soaking", false},
	v1alpha1.NamespaceSucceeded:  {"Soaked", false},
	v1alpha1.NamespaceSkipped:    {"Skipped", false},
	v1alpha1.NamespaceRolledBack: {"RolledBack", true},
	v1alpha1.NamespaceFailed:     {"Failed", true},
	v1alpha1.NamespaceRemoved:    {"Removed", true},
}

// record turns Step's notes into Events and log lines and counts the transitions.
func (r *MTLSRolloutReconciler) record(ctx context.Context, ro *v1alpha1.MTLSRollout, notes []rollout.Note) {
	logger := log.FromContext(ctx)
	for _, n := range notes {
		if n.From == n.To {
			continue
		}
		logger.Info("rollout step", "namespace", n.Namespace, "from", n.From, "to", n.To, "reason", n.Reason, "message", n.Message)
		if n.Namespace == "" {
			metrics.RolloutTransitions.WithLabelValues("rollout", n.To).Inc()
			typ := corev1.EventTypeNormal
			if n.To == string(v1alpha1.RolloutRolledBack) || n.To == string(v1alpha1.RolloutFailed) {
				typ = corev1.EventTypeWarning
			}
			if n.From != "" || n.To != string(v1alpha1.RolloutProgressing) {
				r.Recorder.Eventf(ro, nil, typ, "Rollout"+n.To, "Step", "%s", n.Message)
			}
			continue
		}
		metrics.RolloutTransitions.WithLabelValues("namespace", n.To).Inc()
		ev, ok := eventReasons[v1alpha1.NamespaceRolloutState(n.To)]
		if !ok {
			continue
		}
		typ := corev1.EventTypeNormal
		if ev.warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(ro, nil, typ, ev.reason, "Step", "namespace %s: %s", n.Namespace, n.Message)
	}
}

func states(entries []v1alpha1.NamespaceRolloutStatus) map[string]int {
	out := map[string]int{}
	for _, e := range entries {
		out[string(e.State)]++
	}
	return out
}

// wakeAll wakes every unfinished rollout when an object changes in a way relevant
// says matters (creations and deletions always do).
func (r *MTLSRolloutReconciler) wakeAll(relevant func(old, obj client.Object) bool) handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, _ event.TypedCreateEvent[client.Object], q queue) { r.enqueue(ctx, q, "", 0) },
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q queue) {
			if relevant(e.ObjectOld, e.ObjectNew) {
				r.enqueue(ctx, q, "", 0)
			}
		},
		DeleteFunc: func(ctx context.Context, _ event.TypedDeleteEvent[client.Object], q queue) { r.enqueue(ctx, q, "", 0) },
	}
}

// wakeForProxies wakes, after ProxyDelay, the unfinished rollouts that are looking at
// the namespace of a PodProxyConfig that changed: a thousand proxies reporting within
// a few seconds make one step, not a thousand.
func (r *MTLSRolloutReconciler) wakeForProxies() handler.TypedEventHandler[client.Object, reconcile.Request] {
	wake := func(ctx context.Context, obj client.Object, q queue) {
		r.enqueue(ctx, q, obj.GetNamespace(), r.ProxyDelay)
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q queue) { wake(ctx, e.Object, q) },
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q queue) { wake(ctx, e.ObjectNew, q) },
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q queue) { wake(ctx, e.Object, q) },
	}
}

// enqueue adds the unfinished rollouts (those with namespace in their status when
// namespace is set) to q after delay.
func (r *MTLSRolloutReconciler) enqueue(ctx context.Context, q queue, namespace string, delay time.Duration) {
	list := &v1alpha1.MTLSRolloutList{}
	if err := r.Client.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "failed to list MTLSRollouts")
		return
	}
	for i := range list.Items {
		ro := &list.Items[i]
		if rollout.Finished(ro.Status.Phase) || (namespace != "" && !watching(ro, namespace)) {
			continue
		}
		req := reconcile.Request{NamespacedName: types.NamespacedName{Name: ro.Name}}
		if delay > 0 {
			q.AddAfter(req, delay)
		} else {
			q.Add(req)
		}
	}
}

// watching reports whether a rollout may look at the pods of namespace: those it has
// not finished with.
func watching(ro *v1alpha1.MTLSRollout, namespace string) bool {
	for _, e := range ro.Status.Namespaces {
		if e.Name == namespace {
			switch e.State {
			case v1alpha1.NamespacePending, v1alpha1.NamespaceWaiting, v1alpha1.NamespacePromoted, v1alpha1.NamespaceSoaking:
				return true
			}
			return false
		}
	}
	return false
}

func generationChanged(old, obj client.Object) bool {
	return old.GetGeneration() != obj.GetGeneration()
}
