package controllers

import (
	"context"
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacv1apply "k8s.io/client-go/applyconfigurations/rbac/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/internal/identity"
)

// ProxyRBACReconciler keeps, in every meshed namespace, the RoleBinding meshtls-proxy
// that grants the installed ClusterRole meshtls-proxy (read PodProxyConfigs, write
// their status) to the group system:serviceaccounts:<namespace>, and removes it from a
// namespace with no meshed pod left. Its key is {Name: namespace}.
//
// It watches the operator's PodProxyConfigs (which namespaces are meshed) and
// RoleBindings named meshtls-proxy, and is their only writer. The operator may bind
// that one ClusterRole and no other (RBAC resourceNames), and cannot escalate. A
// RoleBinding of the name that it did not create is left alone and reported.
type ProxyRBACReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder

	foreign foreignReports
}

// proxyRoleBinding is the RoleBinding the proxies of a namespace need.
func proxyRoleBinding(namespace string) (rbacv1.RoleRef, []rbacv1.Subject) {
	return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: identity.ProxyRoleName},
		[]rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:serviceaccounts:" + namespace}}
}

// Reconcile reconciles the proxies' RoleBinding of one namespace.
func (r *ProxyRBACReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Name
	key := client.ObjectKey{Namespace: ns, Name: identity.ProxyRoleName}
	rb, err := getOptional(ctx, r.Client, key, &rbacv1.RoleBinding{})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to get RoleBinding %s: %w", key, err)
	}
	meshed, err := namespaceMeshed(ctx, r.Client, ns)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !meshed {
		return ctrl.Result{}, deleteOwned(ctx, r.Client, rb)
	}
	if rb != nil && rb.Labels[ManagedByLabel] != ManagedByValue {
		r.foreign.report(r.Recorder, rb, "RoleBinding %s/%s was not created by meshtls-operator and is left alone; the proxies of namespace %s may lack read access to their PodProxyConfigs: delete it and the operator creates its own", ns, rb.Name, ns)
		return ctrl.Result{}, nil
	}
	roleRef, subjects := proxyRoleBinding(ns)
	if rb != nil && rb.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	if rb != nil && rb.RoleRef != roleRef {
		// roleRef is immutable: replace the binding.
		if err := deleteOwned(ctx, r.Client, rb); err != nil {
			return ctrl.Result{}, err
		}
		rb = nil
	}
	if rb == nil {
		obj := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: ns, Labels: map[string]string{ManagedByLabel: ManagedByValue}},
			RoleRef:    roleRef,
			Subjects:   subjects,
		}
		if err := r.Client.Create(ctx, obj, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("failed to create RoleBinding %s: %w", key, err)
		}
		log.FromContext(ctx).V(1).Info("created the proxies' RoleBinding", "namespace", ns)
		return ctrl.Result{}, nil
	}
	if slices.Equal(rb.Subjects, subjects) {
		return ctrl.Result{}, nil
	}
	ac := rbacv1apply.RoleBinding(key.Name, ns).WithUID(rb.UID).
		WithLabels(map[string]string{ManagedByLabel: ManagedByValue}).
		WithRoleRef(rbacv1apply.RoleRef().WithAPIGroup(roleRef.APIGroup).WithKind(roleRef.Kind).WithName(roleRef.Name)).
		WithSubjects(rbacv1apply.Subject().WithAPIGroup(subjects[0].APIGroup).WithKind(subjects[0].Kind).WithName(subjects[0].Name))
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return ctrl.Result{}, ignoreRace(err, "failed to apply RoleBinding %s/%s: %w", ns, key.Name)
	}
	log.FromContext(ctx).V(1).Info("restored the proxies' RoleBinding", "namespace", ns)
	return ctrl.Result{}, nil
}
