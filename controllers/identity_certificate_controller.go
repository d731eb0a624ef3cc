package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmapply "github.com/cert-manager/cert-manager/pkg/client/applyconfigurations/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// CertificateReconciler keeps one cert-manager Certificate per ServiceAccount that runs
// a meshed pod, as the MeshMTLSPolicy "default" asks for it (see identity.Certificate),
// and none without a mesh policy. Its key is {Namespace, Name: the Certificate's name}.
//
// It watches the operator's PodProxyConfigs (one per meshed pod: it finds a name's
// ServiceAccount through them), Certificates named meshtls-*, and the mesh policy.
// It is the only writer of workload Certificates: it creates them, applies changes
// with server-side apply (field manager meshtls-operator), and deletes them when the
// last meshed pod of the ServiceAccount is gone. A Certificate of the name that it did
// not create for that ServiceAccount is never touched: the PodProxyConfigs
// (spec.certificate NotOwned) and the mesh status report it. When cert-manager fails
// to issue one, it records a Warning Event on the Certificate with cert-manager's
// reason, once per failure.
type CertificateReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder

	// reported holds, per Certificate UID, the failure last reported in an Event.
	reported sync.Map
}

// Reconcile reconciles one workload Certificate.
func (r *CertificateReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mesh, err := getOptional(ctx, r.Client, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, &v1alpha1.MeshMTLSPolicy{})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to get MeshMTLSPolicy default: %w", err)
	}
	cert, err := getOptional(ctx, r.Client, req.NamespacedName, &cmapi.Certificate{})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to get Certificate %s: %w", req, err)
	}
	sa, err := r.serviceAccount(ctx, req, cert)
	if err != nil {
		return ctrl.Result{}, err
	}
	if mesh == nil || mesh.DeletionTimestamp != nil || sa == "" {
		return ctrl.Result{}, r.remove(ctx, cert)
	}
	if cert != nil && !identity.Owned(cert, sa) {
		// Someone else's: left alone; spec.certificate and the mesh status say so.
		return ctrl.Result{}, nil
	}
	want := identity.Certificate(mesh.Spec, req.Namespace, sa)
	switch {
	case cert == nil:
		if err := r.Client.Create(ctx, want, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Created by someone meanwhile, or not in the cache yet: its watch
				// event brings us back.
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("failed to create Certificate %s: %w", req, err)
		}
		log.FromContext(ctx).V(1).Info("created Certificate", "serviceAccount", sa, "identity", want.Spec.URIs[0])
		return ctrl.Result{}, nil
	case cert.DeletionTimestamp != nil:
		return ctrl.Result{}, nil
	case identity.NeedsUpdate(cert, want):
		return ctrl.Result{}, r.update(ctx, cert, want)
	}
	r.reportFailure(cert, sa)
	return ctrl.Result{}, nil
}

// serviceAccount is the ServiceAccount whose meshed pods need the Certificate named by
// req; "" when none does. Two ServiceAccounts share a name only if a hash-suffixed name
// collides: the one the existing Certificate was made for keeps it.
func (r *CertificateReconciler) serviceAccount(ctx context.Context, req ctrl.Request, cert *cmapi.Certificate) (string, error) {
	list := &v1alpha1.PodProxyConfigList{}
	if err := r.Client.List(ctx, list, client.InNamespace(req.Namespace), client.MatchingFields{indexCertificateName: req.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("failed to list the PodProxyConfigs of Certificate %s: %w", req, err)
	}
	var accounts []string
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil {
			accounts = append(accounts, proxyConfigServiceAccount(&list.Items[i]))
		}
	}
	if len(accounts) == 0 {
		return "", nil
	}
	slices.Sort(accounts)
	accounts = slices.Compact(accounts)
	if cert != nil && slices.Contains(accounts, cert.Annotations[identity.ServiceAccountAnnotation]) {
		return cert.Annotations[identity.ServiceAccountAnnotation], nil
	}
	return accounts[0], nil
}

// update brings an owned Certificate to want with server-side apply. The UID in the
// apply is a precondition: were the object replaced by someone else's meanwhile, the
// API server refuses the change. Identity fields the operator never sets, added by
// hand (a DNS name, CA rights), belong to another field manager and an apply cannot
// drop them: then the whole spec is replaced with an update.
func (r *CertificateReconciler) update(ctx context.Context, cert, want *cmapi.Certificate) error {
	if identity.ForeignIdentity(cert) {
		next := cert.DeepCopy()
		next.Spec = want.Spec
		for k, v := range want.Labels {
			next.Labels[k] = v
		}
		for k, v := range want.Annotations {
			if next.Annotations == nil {
				next.Annotations = map[string]string{}
			}
			next.Annotations[k] = v
		}
		if err := r.Client.Update(ctx, next, client.FieldOwner(FieldManager)); err != nil {
			return ignoreRace(err, "failed to update Certificate %s/%s: %w", cert.Namespace, cert.Name)
		}
		log.FromContext(ctx).Info("replaced identity fields added by hand to a workload Certificate", "certificate", client.ObjectKeyFromObject(cert))
		return nil
	}
	ac, err := certificateApplyConfiguration(want, cert.UID)
	if err != nil {
		return err
	}
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return ignoreRace(err, "failed to apply Certificate %s/%s: %w", cert.Namespace, cert.Name)
	}
	log.FromContext(ctx).V(1).Info("applied Certificate", "identity", want.Spec.URIs[0], "issuer", want.Spec.IssuerRef.Name)
	return nil
}

// ignoreRace drops the errors that mean "the object changed under us": its own watch
// event brings the reconciler back.
func ignoreRace(err error, format string, args ...any) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsInvalid(err) && isUIDMismatch(err) {
		return nil
	}
	return fmt.Errorf(format, append(args, err)...)
}

// isUIDMismatch reports whether an Invalid error is the UID precondition of an apply.
func isUIDMismatch(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == "metadata.uid" {
			return true
		}
	}
	return false
}

// certificateApplyConfiguration is the apply configuration of want, with uid as a
// precondition when set.
func certificateApplyConfiguration(want *cmapi.Certificate, uid types.UID) (*cmapply.CertificateApplyConfiguration, error) {
	raw, err := json.Marshal(want.Spec)
	if err != nil {
		return nil, err
	}
	spec := &cmapply.CertificateSpecApplyConfiguration{}
	if err := json.Unmarshal(raw, spec); err != nil {
		return nil, fmt.Errorf("failed to build the apply configuration of Certificate %s/%s: %w", want.Namespace, want.Name, err)
	}
	ac := cmapply.Certificate(want.Name, want.Namespace).WithLabels(want.Labels).WithAnnotations(want.Annotations).WithSpec(spec)
	if uid != "" {
		ac.WithUID(uid)
	}
	return ac, nil
}

// remove deletes a Certificate the operator made; anything else is left alone. The
// Secret cert-manager wrote stays (cert-manager does not own it by default): a pod
// still running keeps its certificate until it expires.
func (r *CertificateReconciler) remove(ctx context.Context, cert *cmapi.Certificate) error {
	if cert == nil || cert.Labels[ManagedByLabel] != ManagedByValue || cert.DeletionTimestamp != nil {
		return nil
	}
	if err := r.Client.Delete(ctx, cert, client.Preconditions{UID: &cert.UID}); err != nil {
		return ignoreRace(err, "failed to delete Certificate %s/%s: %w", cert.Namespace, cert.Name)
	}
	r.reported.Delete(cert.UID)
	log.FromContext(ctx).V(1).Info("deleted Certificate", "certificate", client.ObjectKeyFromObject(cert))
	return nil
}

// reportFailure records a Warning Event, once per failure, when cert-manager failed to
// issue the Certificate: its reason, and which identity waits on it.
func (r *CertificateReconciler) reportFailure(cert *cmapi.Certificate, sa string) {
	at := identity.FailureTime(cert)
	if at.IsZero() {
		r.reported.Delete(cert.UID)
		return
	}
	if last, ok := r.reported.Load(cert.UID); ok && last.(time.Time).Equal(at) {
		return
	}
	r.reported.Store(cert.UID, at)
	if r.Recorder == nil {
		return
	}
	_, reason, message := identity.IssuanceFailed(cert)
	id := ""
	if len(cert.Spec.URIs) > 0 {
		id = cert.Spec.URIs[0]
	}
	r.Recorder.Eventf(cert, nil, corev1.EventTypeWarning, reason, "Issue",
		"cert-manager could not issue the identity %s of service account %s (issuer %s %s): %s; the proxies of its pods wait for it",
		id, sa, cert.Spec.IssuerRef.Kind, cert.Spec.IssuerRef.Name, message)
}
