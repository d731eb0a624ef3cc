package controllers

import (
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"

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

// TrimPod is the cache transform of pods: the operator reads only their metadata
// (name, namespace, UID, labels, owner, the inbound-exclusion annotation), service
// account, host network, and container names and ports (policy.PodFrom), so the cache
// drops the rest. It keeps the manager's memory near 4 KiB per pod.
func TrimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	trimmed := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
	}
	trimmed.Name, trimmed.Namespace, trimmed.UID = pod.Name, pod.Namespace, pod.UID
	trimmed.Labels, trimmed.ResourceVersion, trimmed.Generation = pod.Labels, pod.ResourceVersion, pod.Generation
	trimmed.CreationTimestamp, trimmed.DeletionTimestamp = pod.CreationTimestamp, pod.DeletionTimestamp
	trimmed.OwnerReferences = pod.OwnerReferences
	if v, ok := pod.Annotations[policy.AnnotationExcludeInboundPorts]; ok {
		trimmed.Annotations = map[string]string{policy.AnnotationExcludeInboundPorts: v}
	}
	trimmed.Spec.ServiceAccountName = pod.Spec.ServiceAccountName
	trimmed.Spec.HostNetwork = pod.Spec.HostNetwork
	for _, list := range []struct {
		from []corev1.Container
		to   *[]corev1.Container
	}{{pod.Spec.InitContainers, &trimmed.Spec.InitContainers}, {pod.Spec.Containers, &trimmed.Spec.Containers}} {
		for _, c := range list.from {
			*list.to = append(*list.to, corev1.Container{Name: c.Name, Ports: c.Ports})
		}
	}
	return trimmed, nil
}

// TrimProxyConfig is the cache transform of PodProxyConfigs: their status is the
// proxies' (counters, conditions), which the operator never reads, so the cache drops
// it. Updates of the spec ignore status (it is a subresource), so nothing is lost.
func TrimProxyConfig(obj any) (any, error) {
	if ppc, ok := obj.(*v1alpha1.PodProxyConfig); ok {
		ppc.Status = v1alpha1.PodProxyConfigStatus{}
	}
	return obj, nil
}
