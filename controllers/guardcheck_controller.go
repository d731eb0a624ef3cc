package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// The guard's RBAC: read-only, on the two admission kinds only. The operator never
// installs the guard: that would take a permission to write any admission policy.
//
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.meshtls.io,resources=meshmtlspolicies/status,verbs=patch

const (
	// GuardName is the name of the PodProxyConfig guard's ValidatingAdmissionPolicy
	// and of its binding (config/guard).
	GuardName = "meshtls-podproxyconfig-guard"
	// GuardInstallCommand installs the guard from the operator's source tree at the
	// installed version.
	GuardInstallCommand = "kubectl apply --server-side -k config/guard"
	// GuardFieldManager is the server-side apply field manager of the GuardInstalled
	// condition, and of nothing else.
	GuardFieldManager = "meshtls-guardcheck"
	// GuardRecheckInterval is how often the guard is checked besides on changes.
	GuardRecheckInterval = 5 * time.Minute

	// Reasons of the GuardInstalled condition.
	// ReasonGuardInstalled: the policy and its binding are installed and deny.
	ReasonGuardInstalled = "Installed"
	// ReasonGuardNotInstalled: the ValidatingAdmissionPolicy is missing.
	ReasonGuardNotInstalled = "NotInstalled"
	// ReasonGuardNotBound: the policy is there but no binding puts it in force.
	ReasonGuardNotBound = "NotBound"
	// ReasonGuardNotEnforced: the binding only warns or audits; it does not deny.
	ReasonGuardNotEnforced = "NotEnforced"
	// ReasonGuardNamesAnotherOperator: the policy lets another service account write
	// PodProxyConfigs and would refuse this operator's writes.
	ReasonGuardNamesAnotherOperator = "NamesAnotherOperator"
)

// GuardCheckReconciler reports whether the PodProxyConfig guard (config/guard: a
// ValidatingAdmissionPolicy and its binding) is installed and in force, in the
// MeshMTLSPolicy "default" condition GuardInstalled. OLM cannot install
// ValidatingAdmissionPolicies, so an OLM install runs without the guard until an
// administrator applies it; the condition tells them, with the command.
//
// It watches (read-only) the two admission kinds and the mesh policy, and rechecks
// every GuardRecheckInterval. Its single key is {Name: default}; it runs on the
// leader only.
//
// It is the only writer of that one condition: it applies the condition alone with
// server-side apply as field manager meshtls-guardcheck. status.conditions is a map
// keyed by type, so the apply owns that entry only; the mesh status reconciler
// (field manager meshtls-operator) writes the rest of the status from the live
// object and carries this entry over unchanged, which keeps its ownership here.
type GuardCheckReconciler struct {
	Client client.Client
	// OperatorUsername is the user the operator's requests come as
	// (system:serviceaccount:<namespace>:meshtls-operator); the guard must let it
	// write PodProxyConfigs. Empty skips that check.
	OperatorUsername string
	Clock            clock.PassiveClock
}

// SetupGuardCheck registers the guard check with the manager.
func SetupGuardCheck(mgr ctrl.Manager, operatorUsername string) error {
	r := &GuardCheckReconciler{Client: mgr.GetClient(), OperatorUsername: operatorUsername, Clock: clock.RealClock{}}
	toDefault := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}}}
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("guardcheck").
		Watches(&v1alpha1.MeshMTLSPolicy{}, toDefault).
		Watches(&admissionv1.ValidatingAdmissionPolicy{}, toDefault).
		Watches(&admissionv1.ValidatingAdmissionPolicyBinding{}, toDefault).
		Complete(r)
	if err != nil {
		return fmt.Errorf("failed to set up the guardcheck controller: %w", err)
	}
	return nil
}

// Reconcile checks the guard and writes the condition when it changed.
func (r *GuardCheckReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	mesh := &v1alpha1.MeshMTLSPolicy{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, mesh); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil // its creation brings us back
		}
		return ctrl.Result{}, fmt.Errorf("failed to get MeshMTLSPolicy default: %w", err)
	}
	var policy *admissionv1.ValidatingAdmissionPolicy
	var binding *admissionv1.ValidatingAdmissionPolicyBinding
	p := &admissionv1.ValidatingAdmissionPolicy{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Name: GuardName}, p); {
	case err == nil:
		policy = p
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, fmt.Errorf("failed to get ValidatingAdmissionPolicy %s: %w", GuardName, err)
	}
	b := &admissionv1.ValidatingAdmissionPolicyBinding{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Name: GuardName}, b); {
	case err == nil:
		binding = b
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, fmt.Errorf("failed to get ValidatingAdmissionPolicyBinding %s: %w", GuardName, err)
	}

	installed, reason, message := GuardState(policy, binding, r.OperatorUsername)
	want := metav1.Condition{
		Type: v1alpha1.ConditionGuardInstalled, Status: metav1.ConditionFalse,
		Reason: reason, Message: message, ObservedGeneration: mesh.Generation,
	}
	if installed {
		want.Status = metav1.ConditionTrue
	}
	have := meta.FindStatusCondition(mesh.Status.Conditions, v1alpha1.ConditionGuardInstalled)
	if have != nil && have.Status == want.Status && have.Reason == want.Reason && have.Message == want.Message &&
		have.ObservedGeneration == want.ObservedGeneration {
		return ctrl.Result{RequeueAfter: GuardRecheckInterval}, nil
	}
	want.LastTransitionTime = metav1.NewTime(r.Clock.Now())
	if have != nil && have.Status == want.Status {
		want.LastTransitionTime = have.LastTransitionTime
	}
	if err := r.apply(ctx, want); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: GuardRecheckInterval}, nil
}

// apply writes the one condition with server-side apply: only that entry of
// status.conditions is in the request, so no other field changes owner.
func (r *GuardCheckReconciler) apply(ctx context.Context, c metav1.Condition) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	cond := map[string]any{}
	if err := json.Unmarshal(raw, &cond); err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MeshMTLSPolicy",
		"metadata":   map[string]any{"name": v1alpha1.MeshMTLSPolicyName},
		"status":     map[string]any{"conditions": []any{cond}},
	}}
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(GuardFieldManager), client.ForceOwnership)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to apply the %s condition of MeshMTLSPolicy default: %w", v1alpha1.ConditionGuardInstalled, err)
	}
	return nil
}

// GuardState decides the GuardInstalled condition from the guard's policy and
// binding as the API server has them (nil when absent). operatorUsername, when set,
// must be the user the policy lets write PodProxyConfigs.
func GuardState(policy *admissionv1.ValidatingAdmissionPolicy, binding *admissionv1.ValidatingAdmissionPolicyBinding,
	operatorUsername string) (installed bool, reason, message string) {
	const why = "without it, the proxies of a namespace can write each other's PodProxyConfig status"
	install := fmt.Sprintf("install it with `%s` from the meshtls-operator source at the installed version "+
		"(OLM does not install ValidatingAdmissionPolicies)", GuardInstallCommand)
	if ns := namespaceOf(operatorUsername); ns != "" && ns != "meshtls-system" {
		install += fmt.Sprintf(", after `kustomize edit set namespace %s` in config/guard", ns)
	}
	switch {
	case policy == nil:
		return false, ReasonGuardNotInstalled, fmt.Sprintf("the PodProxyConfig guard (ValidatingAdmissionPolicy %s) is not installed: %s; %s",
			GuardName, why, install)
	case binding == nil:
		return false, ReasonGuardNotBound, fmt.Sprintf("ValidatingAdmissionPolicy %s is installed but ValidatingAdmissionPolicyBinding %s is missing, so it is not in force: %s; %s",
			GuardName, GuardName, why, install)
	case binding.Spec.PolicyName != GuardName:
		return false, ReasonGuardNotBound, fmt.Sprintf("ValidatingAdmissionPolicyBinding %s binds policy %q instead of %s, so the guard is not in force: %s; %s",
			GuardName, binding.Spec.PolicyName, GuardName, why, install)
	case !slices.Contains(binding.Spec.ValidationActions, admissionv1.Deny):
		return false, ReasonGuardNotEnforced, fmt.Sprintf("ValidatingAdmissionPolicyBinding %s has validationActions %v, which do not deny: set them to [Deny] (%s)",
			GuardName, binding.Spec.ValidationActions, GuardInstallCommand)
	}
	if operatorUsername != "" {
		spec, _ := json.Marshal(policy.Spec)
		if !strings.Contains(string(spec), "'"+operatorUsername+"'") {
			return false, ReasonGuardNamesAnotherOperator, fmt.Sprintf("ValidatingAdmissionPolicy %s does not name this operator's user %s as the writer of PodProxyConfigs, so it refuses the operator's writes: run `kustomize edit set namespace %s` in config/guard and `%s` again",
				GuardName, operatorUsername, namespaceOf(operatorUsername), GuardInstallCommand)
		}
	}
	return true, ReasonGuardInstalled, fmt.Sprintf("the PodProxyConfig guard (ValidatingAdmissionPolicy %s and its binding) is installed and denies", GuardName)
}

// namespaceOf is the namespace of a service account's username
// (system:serviceaccount:<namespace>:<name>), or "".
func namespaceOf(username string) string {
	parts := strings.Split(username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return ""
	}
	return parts[2]
}
