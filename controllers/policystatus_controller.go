package controllers

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// PolicyStatusReconciler writes the status of the NamespaceMTLSPolicy and the
// WorkloadMTLSPolicies of one namespace (its key is {Name: namespace}): selected pods,
// effective mode, and the Accepted, Conflicted, MinimumModeApplied and Ready
// conditions, all from the resolver. It is the only writer of those statuses, writes
// only what changed, and records an Event when a policy's outcome changes.
type PolicyStatusReconciler struct {
	Client client.Client
	// Reader reads the live object when a status write meets a conflict.
	Reader   client.Reader
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
			errs = append(errs, writeStatus(ctx, r.Client, r.Reader, r.Recorder, nsPolicy, &nsPolicy.Status,
				func() v1alpha1.NamespaceMTLSPolicyStatus { return namespaceStatus(nsPolicy, s, floor) },
				func(s *v1alpha1.NamespaceMTLSPolicyStatus) []metav1.Condition { return s.Conditions }))
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
		errs = append(errs, writeStatus(ctx, r.Client, r.Reader, r.Recorder, p, &p.Status,
			func() v1alpha1.WorkloadMTLSPolicyStatus { return workloadStatus(p, s, floor) },
			func(s *v1alpha1.WorkloadMTLSPolicyStatus) []metav1.Condition { return s.Conditions }))
	}
	return ctrl.Result{}, errors.Join(errs...)
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
