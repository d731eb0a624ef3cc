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

// TrimPod is the cache transform of pods. The operator reads of a pod only what
// policy.PodFrom reads (name, namespace, UID, labels, the inbound-exclusion annotation,
// service account, host network, TCP container ports, whether a meshtls-proxy init
// container is there), so the cache keeps the pod in that minimal form: every port in
// one container, and at most one init container. PodFrom reads the same from it.
func TrimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	p := policy.PodFrom(pod)
	trimmed := &corev1.Pod{}
	trimmed.Name, trimmed.Namespace, trimmed.UID = pod.Name, pod.Namespace, pod.UID
	trimmed.Labels, trimmed.ResourceVersion = pod.Labels, pod.ResourceVersion
	if v, ok := pod.Annotations[policy.AnnotationExcludeInboundPorts]; ok {
		trimmed.Annotations = map[string]string{policy.AnnotationExcludeInboundPorts: v}
	}
	trimmed.Spec.ServiceAccountName = pod.Spec.ServiceAccountName
	trimmed.Spec.HostNetwork = pod.Spec.HostNetwork
	if p.Sidecar {
		trimmed.Spec.InitContainers = []corev1.Container{{Name: policy.ProxyContainerName}}
	}
	if len(p.Ports) > 0 {
		ports := make([]corev1.ContainerPort, len(p.Ports))
		for i, port := range p.Ports {
			ports[i].ContainerPort = port
		}
		trimmed.Spec.Containers = []corev1.Container{{Ports: ports}}
	}
	return trimmed, nil
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
	hash := ppc.Spec.ConfigHash
	if policy.ConfigHash(ppc.Spec) != hash {
		hash = ""
	}
	trimmed := &v1alpha1.PodProxyConfig{}
	trimmed.Name, trimmed.Namespace, trimmed.UID = ppc.Name, ppc.Namespace, ppc.UID
	trimmed.ResourceVersion, trimmed.Generation = ppc.ResourceVersion, ppc.Generation
	trimmed.Labels, trimmed.DeletionTimestamp = ppc.Labels, ppc.DeletionTimestamp
	trimmed.Spec = v1alpha1.PodProxyConfigSpec{
		PodUID: ppc.Spec.PodUID, ConfigHash: hash, Sidecar: ppc.Spec.Sidecar, Certificate: ppc.Spec.Certificate,
		// The identity controllers read these: which Certificate each pod needs.
		ServiceAccountName: ppc.Spec.ServiceAccountName, Identity: ppc.Spec.Identity, CertificateSecretName: ppc.Spec.CertificateSecretName,
	}
	return trimmed, nil
}
