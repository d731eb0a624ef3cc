package webhooks

import (
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Options configure the webhooks.
type Options struct {
	Inject inject.Config
}

// Setup registers the admission webhooks with the manager's webhook server. They
// answer from the policy index on every replica; ready returns an error until that
// index is filled, and they refuse until then.
func Setup(mgr ctrl.Manager, ix *policy.Index, ready func() error, opts Options) error {
	if err := builder.WebhookManagedBy(mgr, &v1alpha1.WorkloadMTLSPolicy{}).WithValidator(&WorkloadPolicyValidator{Index: ix, Ready: ready}).Complete(); err != nil {
		return err
	}
	if err := builder.WebhookManagedBy(mgr, &v1alpha1.NamespaceMTLSPolicy{}).WithValidator(&NamespacePolicyValidator{Index: ix, Ready: ready}).Complete(); err != nil {
		return err
	}
	if err := builder.WebhookManagedBy(mgr, &v1alpha1.MeshMTLSPolicy{}).WithValidator(&MeshPolicyValidator{Index: ix, Ready: ready}).Complete(); err != nil {
		return err
	}
	if err := builder.WebhookManagedBy(mgr, &v1alpha1.MTLSRollout{}).WithValidator(&RolloutValidator{Client: mgr.GetClient(), Ready: ready}).Complete(); err != nil {
		return err
	}
	injector := &PodInjector{Index: ix, Reader: mgr.GetAPIReader(), Config: opts.Inject, Ready: ready}
	return builder.WebhookManagedBy(mgr, &corev1.Pod{}).WithDefaulter(injector).Complete()
}
