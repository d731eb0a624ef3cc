package controllers

import (
	"context"
	"errors"
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/metrics"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// PolicyStatusReconciler writes the status of the NamespaceMTLSPolicy and the
// WorkloadMTLSPolicies of one namespace (its key is {Name: namespace}): selected pods,
// effective mode, and the Accepted, Conflicted, MinimumModeApplied and Ready
// conditions, all from the resolver. It is the only writer of those statuses, writes
// only what changed, and records an Event when a policy's outcome changes.
type PolicyStatusReconciler struct {
	Client   client.Client
	Index    *policy.Index
	Recorder recorder.EventRecorder
}

// Reconcile reconciles the policy statuses of the namespace req.Name.
func (r *PolicyStatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Name
	floor := r.Index.Floor()
	var errs []error

	nsPolicy := &v1alpha1.NamespaceMTLSPolicy{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1alpha1.NamespaceMTLSPolicyName}, nsPolicy)
	switch {
	case err == nil:
		if s, ok := r.Index.NamespacePolicyStatus(ns); ok {
			status := namespaceStatus(nsPolicy, s, floor)
			errs = append(errs, r.write(ctx, nsPolicy, &nsPolicy.Status, status, "NamespaceMTLSPolicy", nsPolicy.Status.Conditions, status.Conditions))
		}
	case !apierrors.IsNotFound(err):
		errs = append(errs, fmt.Errorf("failed to get NamespaceMTLSPolicy %s/default: %w", ns, err))
	}

	workloads := &v1alpha1.WorkloadMTLSPolicyList{}
	if err := r.Client.List(ctx, workloads, client.InNamespace(ns)); err != nil {
		return ctrl.Result{}, errors.Join(append(errs, fmt.Errorf("failed to list WorkloadMTLSPolicies in %s: %w", ns, err))...)
	}
	statuses := r.Index.WorkloadPolicyStatuses(ns)
	for i := range workloads.Items {
		p := &workloads.Items[i]
		s, ok := statuses[p.Name]
		if !ok {
			continue // the index has not seen it yet; its event brings us back
		}
		status := workloadStatus(p, s, floor)
		errs = append(errs, r.write(ctx, p, &p.Status, status, "WorkloadMTLSPolicy", p.Status.Conditions, status.Conditions))
	}
	return ctrl.Result{}, errors.Join(errs...)
}

// write stores want into *current and updates the status subresource, when it
// differs; it records an Event for each outcome condition that flipped.
func (r *PolicyStatusReconciler) write(ctx context.Context, obj client.Object, current, want any, kind string, oldConds, newConds []metav1.Condition) error {
	if apiequality.Semantic.DeepEqual(current, want) {
		return nil
	}
	switch c := current.(type) {
	case *v1alpha1.NamespaceMTLSPolicyStatus:
		*c = want.(v1alpha1.NamespaceMTLSPolicyStatus)
	case *v1alpha1.WorkloadMTLSPolicyStatus:
		*c = want.(v1alpha1.WorkloadMTLSPolicyStatus)
	}
	if err := r.Client.Status().Update(ctx, obj, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // a newer version is on its way through the watch
		}
		return fmt.Errorf("failed to update status of %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	metrics.StatusWrites.WithLabelValues(kind).Inc()
	recordFlips(r.Recorder, obj, oldConds, newConds)
	return nil
}

// outcomeConditions are the conditions whose changes are worth an Event.
var outcomeConditions = []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionConflicted, v1alpha1.ConditionMinimumModeApplied}

func recordFlips(rec recorder.EventRecorder, obj client.Object, oldConds, newConds []metav1.Condition) {
	if rec == nil {
		return
	}
	for _, typ := range outcomeConditions {
		now := meta.FindStatusCondition(newConds, typ)
		if now == nil {
			continue
		}
		before := meta.FindStatusCondition(oldConds, typ)
		if before != nil && before.Status == now.Status && before.Reason == now.Reason {
			continue
		}
		eventType := "Normal"
		bad := (typ == v1alpha1.ConditionAccepted && now.Status == metav1.ConditionFalse) ||
			(typ != v1alpha1.ConditionAccepted && now.Status == metav1.ConditionTrue)
		if bad {
			eventType = "Warning"
		}
		if before == nil && !bad {
			continue // a new policy that is fine: no noise
		}
		rec.Eventf(obj, nil, eventType, now.Reason, "Reconcile", "%s=%s: %s", typ, now.Status, now.Message)
	}
}
