package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/metrics"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// MeshStatusReconciler writes the MeshMTLSPolicy status (meshed namespaces and pods,
// pods by mode, Ready) and the meshtls_pods metric. Its single key is {Name: default};
// the feeder wakes it, after a short delay that coalesces bursts, whenever meshed pods
// may have changed.
type MeshStatusReconciler struct {
	Client client.Client
	// Reader reads the live object when a status write meets a conflict.
	Reader client.Reader
	Index  *policy.Index
	// Identity gathers IssuerReady, TrustBundleReady and the certificate counts; nil
	// leaves them out.
	Identity *Identity
}

// Reconcile reconciles the mesh status.
func (r *MeshStatusReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	counts := r.Index.MeshStatus()
	metrics.PodsByMode.WithLabelValues(string(v1alpha1.ModeStrict)).Set(float64(counts.Strict))
	metrics.PodsByMode.WithLabelValues(string(v1alpha1.ModePermissive)).Set(float64(counts.Permissive))
	metrics.PodsByMode.WithLabelValues(string(v1alpha1.ModeDisable)).Set(float64(counts.Disable))
	metrics.MeshedPodsWithoutSidecar.Set(float64(counts.WithoutSidecar))
	metrics.ForeignProxyConfigs.Set(float64(counts.ForeignProxyConfigs))

	mesh := &v1alpha1.MeshMTLSPolicy{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshMTLSPolicyName}, mesh); err != nil {
		if apierrors.IsNotFound(err) {
			if r.Identity != nil {
				r.Identity.status.clearMetrics()
			}
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to get MeshMTLSPolicy default: %w", err)
	}
	var ident identityObservation
	if r.Identity != nil {
		var err error
		if ident, err = r.Identity.status.observe(ctx, mesh); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: ident.recheck}, writeStatus(ctx, r.Client, r.Reader, nil, mesh, &mesh.Status,
		func() v1alpha1.MeshMTLSPolicyStatus {
			s := meshStatus(mesh, counts)
			if r.Identity != nil {
				setIdentityStatus(&s, mesh.Generation, ident)
			}
			return s
		},
		func(s *v1alpha1.MeshMTLSPolicyStatus) []metav1.Condition { return s.Conditions })
}
