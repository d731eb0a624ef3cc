package controllers

import (
	"fmt"
	"reflect"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Options tune the controllers.
type Options struct {
	// MaxConcurrentReconciles is the number of PodProxyConfig workers.
	MaxConcurrentReconciles int
	// OperatorNamespace holds the ConfigMap that MeshMTLSPolicy spec.trustBundle names.
	OperatorNamespace string
}

// Setup registers the controllers with the manager. They run on the leader only,
// around the policy index that f keeps (on every replica) and wakes them from.
func Setup(mgr ctrl.Manager, f *Feeder, opts Options) error {
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 16
	}
	ix := f.index

	ident, err := SetupIdentity(mgr, IdentityOptions{OperatorNamespace: opts.OperatorNamespace, MeshChanged: func() { f.mesh.notify(meshKey) }})
	if err != nil {
		return err
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("podproxyconfig").
		WatchesRawSource(f.pods).
		Watches(&v1alpha1.PodProxyConfig{}, proxyConfigHandler()).
		Watches(&cmapi.Certificate{}, CertificateToProxyConfigs(mgr.GetClient())). // spec.certificate
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(&PodProxyConfigReconciler{Client: mgr.GetClient(), Index: ix, Recorder: mgr.GetEventRecorder("meshtls-operator"), Status: f.status})
	if err != nil {
		return fmt.Errorf("failed to set up the podproxyconfig controller: %w", err)
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("policystatus").
		WatchesRawSource(f.status).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(&PolicyStatusReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Index: ix, Recorder: mgr.GetEventRecorder("meshtls-operator")})
	if err != nil {
		return fmt.Errorf("failed to set up the policystatus controller: %w", err)
	}

	err = ctrl.NewControllerManagedBy(mgr).
		Named("meshstatus").
		WatchesRawSource(f.mesh).
		Complete(&MeshStatusReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Index: ix, Identity: ident})
	if err != nil {
		return fmt.Errorf("failed to set up the meshstatus controller: %w", err)
	}

	err = (&MTLSRolloutReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Index: ix, Recorder: mgr.GetEventRecorder(RolloutFieldManager)}).SetupWithManager(mgr)
	if err != nil {
		return fmt.Errorf("failed to set up the mtlsrollout controller: %w", err)
	}
	return nil
}

// PodSummary is what the pod informer stores instead of a Pod: the metadata the
// informer itself needs and the resolver's view of the pod, which the policy index
// shares rather than copies. Nothing reads pods through the cached client (a read
// would fail: this is not a *corev1.Pod); the feeder is the informer's only consumer.
type PodSummary struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	Pod *policy.Pod
}

// DeepCopyObject implements runtime.Object. A summary is never modified once made, so
// the copy shares it.
func (p *PodSummary) DeepCopyObject() runtime.Object { c := *p; return &c }

// TrimPod is the cache transform of pods: it keeps a PodSummary, about 0.7 KiB where a
// pod even stripped to its ports costs 2 KiB, and the index holds the same Pod value.
func TrimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	s := &PodSummary{Pod: policy.PodFrom(pod)}
	s.Name, s.Namespace, s.UID, s.ResourceVersion, s.Labels = pod.Name, pod.Namespace, pod.UID, pod.ResourceVersion, pod.Labels
	return s, nil
}

// trimmedAnnotation marks a PodProxyConfig that TrimProxyConfig made, so that a second
// pass leaves it alone. It exists only in the cache, never in the API.
const trimmedAnnotation = "meshtls.io/cache-trimmed"

// trimmedMarker is shared by every trimmed object and never modified.
var trimmedMarker = map[string]string{trimmedAnnotation: ""}

// trimmed reports whether TrimProxyConfig made ppc: its annotations are the very
// marker map, which no object decoded from the API can be (an annotation of that name
// set by someone would not do).
func trimmed(ppc *v1alpha1.PodProxyConfig) bool {
	return ppc.Annotations != nil && reflect.ValueOf(ppc.Annotations).UnsafePointer() == reflect.ValueOf(trimmedMarker).UnsafePointer()
}

// TrimProxyConfig is the cache transform of PodProxyConfigs. The operator compares a
// PodProxyConfig with what it wants by configHash alone (plus the observations outside
// the hash), so the cache keeps the metadata it needs, spec.podUID, spec.configHash,
// spec.sidecar and spec.certificate. It checks the hash against the spec it came with
// and empties it on a mismatch: a hand edit that kept the hash is then rewritten like
// any other. Status is the proxies' and is dropped. Specs are written with a patch that
// replaces the whole spec, never from this copy.
func TrimProxyConfig(obj any) (any, error) {
	ppc, ok := obj.(*v1alpha1.PodProxyConfig)
	if !ok {
		return obj, nil
	}
	if trimmed(ppc) {
		// client-go may hand a stored (already trimmed) object to the transform
		// again, on a relist: the hash of a trimmed spec would never match.
		return ppc, nil
	}
	hash := ppc.Spec.ConfigHash
	if policy.ConfigHash(ppc.Spec) != hash {
		hash = ""
	}
	trimmed := &v1alpha1.PodProxyConfig{}
	trimmed.Name, trimmed.Namespace, trimmed.UID = ppc.Name, ppc.Namespace, ppc.UID
	trimmed.ResourceVersion, trimmed.Generation = ppc.ResourceVersion, ppc.Generation
	trimmed.Labels, trimmed.DeletionTimestamp = ppc.Labels, ppc.DeletionTimestamp
	trimmed.Annotations = trimmedMarker
	trimmed.Spec = v1alpha1.PodProxyConfigSpec{
		PodUID: ppc.Spec.PodUID, ConfigHash: hash, Sidecar: ppc.Spec.Sidecar, Certificate: ppc.Spec.Certificate,
		// The identity controllers read these: which Certificate each pod needs.
		ServiceAccountName: ppc.Spec.ServiceAccountName, Identity: ppc.Spec.Identity, CertificateSecretName: ppc.Spec.CertificateSecretName,
	}
	return trimmed, nil
}
