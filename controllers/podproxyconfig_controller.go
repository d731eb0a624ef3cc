package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/metrics"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Labels and names shared by everything the operator writes.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "meshtls-operator"
	FieldManager   = "meshtls-operator"
)

// PodProxyConfigReconciler keeps one PodProxyConfig per meshed pod: same name as the
// pod, owned by it, its spec the resolver's answer for the pod.
//
// It watches (through the feeder) pods, namespaces, Services and the three policy
// kinds, and PodProxyConfigs themselves. It writes PodProxyConfig objects, and spec
// only: status belongs to the pod's proxy. It writes only when the resolved content
// changed (configHash), replaces the object when a pod of the same name comes back
// with a new UID, and deletes it when the pod is gone or no longer meshed; it does not
// rely on the garbage collector alone. A PodProxyConfig of the pod's name that the
// operator did not create is never overwritten nor deleted: the index records it, so
// the policy deciding for the pod says so (Ready=False, ProxyConfigNotOwned), the pod
// gets a Warning Event, and the meshtls_foreign_podproxyconfigs gauge counts it.
type PodProxyConfigReconciler struct {
	Client   client.Client
	Index    *policy.Index
	Recorder recorder.EventRecorder
	// Status wakes the policy-status controller, keyed by namespace.
	Status *notifier
}

// ours reports whether the operator created a PodProxyConfig.
func ours(ppc *v1alpha1.PodProxyConfig) bool { return ppc.Labels[ManagedByLabel] == ManagedByValue }

// markForeign records whether the pod's PodProxyConfig is someone else's, and when
// that changes wakes the namespace's statuses and, when it became foreign, warns on
// the pod.
func (r *PodProxyConfigReconciler) markForeign(req ctrl.Request, podUID string, foreign bool) {
	if !r.Index.SetForeignProxyConfig(req.Namespace, req.Name, foreign) {
		return
	}
	if r.Status != nil {
		r.Status.notify(ctrl.Request{NamespacedName: types.NamespacedName{Name: req.Namespace}})
	}
	if foreign && r.Recorder != nil {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: req.Namespace, UID: types.UID(podUID)}}
		r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, v1alpha1.ReasonProxyConfigNotOwned, "Reconcile",
			"PodProxyConfig %s/%s was not created by meshtls-operator and is left alone, so this pod does not get its resolved configuration; delete it and the operator creates the pod's own", req.Namespace, req.Name)
	}
}

// reconciles counts PodProxyConfig reconciles, for Reconciles.
var reconciles atomic.Int64

// Reconciles is the number of PodProxyConfig reconciles since start: the composition
// root watches it to hand memory back to the OS after a burst.
func Reconciles() int64 { return reconciles.Load() }

// Reconcile reconciles the PodProxyConfig of the pod named by req.
func (r *PodProxyConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	reconciles.Add(1)
	result, meshed := r.Index.Resolve(req.Namespace, req.Name)

	current := &v1alpha1.PodProxyConfig{}
	err := r.Client.Get(ctx, req.NamespacedName, current)
	switch {
	case apierrors.IsNotFound(err):
		current = nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("failed to get PodProxyConfig %s: %w", req, err)
	}

	if !meshed {
		r.markForeign(req, "", false)
		return ctrl.Result{}, r.remove(ctx, current)
	}
	if current != nil && !ours(current) {
		r.markForeign(req, result.Pod.UID, true)
		return ctrl.Result{}, nil
	}
	r.markForeign(req, result.Pod.UID, false)
	want := policy.ProxyConfigSpec(result)
	if want.CertificateSecretName != "" {
		// After the hash: whether the certificate is issued is an observation.
		if want.Certificate, err = certificateState(ctx, r.Client, req.Namespace, &want); err != nil {
			return ctrl.Result{}, err
		}
	}
	if current != nil && current.Spec.PodUID != want.PodUID {
		// A pod of the same name with a new UID (a StatefulSet pod recreated): the old
		// object belongs to the old pod.
		if err := r.remove(ctx, current); err != nil {
			return ctrl.Result{}, err
		}
		current = nil
	}
	if current == nil {
		return r.create(ctx, result.Pod, want)
	}
	// The cache keeps only what this comparison needs (TrimProxyConfig): the hash,
	// emptied when it does not match the spec it came with (a hand edit that kept the
	// hash), and the observations outside the hash.
	if sameSpec(current.Spec, want) {
		return ctrl.Result{}, nil
	}
	if err := r.replaceSpec(ctx, current, want); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to update PodProxyConfig %s: %w", req, err)
	}
	metrics.ProxyConfigWrites.WithLabelValues("update").Inc()
	log.FromContext(ctx).V(1).Info("updated PodProxyConfig", "mode", want.Inbound.Mode, "hash", want.ConfigHash)
	return ctrl.Result{}, nil
}

// sameSpec reports whether a cached (trimmed) spec already says what want says.
func sameSpec(cached, want v1alpha1.PodProxyConfigSpec) bool {
	return cached.ConfigHash == want.ConfigHash && cached.PodUID == want.PodUID && cached.Sidecar == want.Sidecar &&
		apiequality.Semantic.DeepEqual(cached.Certificate, want.Certificate)
}

// replaceSpec replaces the whole spec in one JSON patch, guarded by the object's UID:
// the cached copy is trimmed, so an Update from it would be wrong, and a merge patch
// would leave stale fields behind.
func (r *PodProxyConfigReconciler) replaceSpec(ctx context.Context, current *v1alpha1.PodProxyConfig, want v1alpha1.PodProxyConfigSpec) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": current.UID},
		{"op": "replace", "path": "/spec", "value": want},
	})
	if err != nil {
		return err
	}
	return r.Client.Patch(ctx, current, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner(FieldManager))
}

func (r *PodProxyConfigReconciler) create(ctx context.Context, pod policy.Pod, spec v1alpha1.PodProxyConfigSpec) (ctrl.Result, error) {
	ppc := &v1alpha1.PodProxyConfig{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name,
			Namespace: pod.Namespace,
			Labels:    map[string]string{ManagedByLabel: ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: spec.PodUID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false),
			}},
		},
		Spec: spec,
	}
	if err := r.Client.Create(ctx, ppc, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The cache has not seen it yet (ours being deleted, or someone else's):
			// look again once it has.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to create PodProxyConfig %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	metrics.ProxyConfigWrites.WithLabelValues("create").Inc()
	log.FromContext(ctx).V(1).Info("created PodProxyConfig", "mode", spec.Inbound.Mode, "hash", spec.ConfigHash)
	return ctrl.Result{}, nil
}

// remove deletes a PodProxyConfig the operator made; one without our label is left
// alone (the operator never deletes what a user owns).
func (r *PodProxyConfigReconciler) remove(ctx context.Context, ppc *v1alpha1.PodProxyConfig) error {
	if ppc == nil || !ours(ppc) || ppc.DeletionTimestamp != nil {
		return nil
	}
	err := r.Client.Delete(ctx, ppc, client.Preconditions{UID: &ppc.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("failed to delete PodProxyConfig %s/%s: %w", ppc.Namespace, ppc.Name, err)
	}
	if err == nil {
		metrics.ProxyConfigWrites.WithLabelValues("delete").Inc()
		log.FromContext(ctx).V(1).Info("deleted PodProxyConfig", "podUID", ppc.Spec.PodUID)
	}
	return nil
}
