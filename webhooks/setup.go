package webhooks

import (
	"context"
	"errors"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Options configure the webhooks.
type Options struct {
	Inject            inject.Config
	OperatorNamespace string
}

// errNotReady refuses requests until the caches (and so the index) are filled: a
// webhook that answered from an empty index would admit conflicts it cannot see.
var errNotReady = errors.New("meshtls-operator is starting and its caches are not synced yet; retry in a few seconds")

// Setup registers the admission webhooks with the manager's webhook server.
func Setup(mgr ctrl.Manager, ix *policy.Index, opts Options) error {
	var synced atomic.Bool
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if mgr.GetCache().WaitForCacheSync(ctx) {
			synced.Store(true)
		}
		return nil
	})); err != nil {
		return err
	}
	ready := func() error {
		if !synced.Load() {
			return errNotReady
		}
		return nil
	}
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
	injector := &PodInjector{Client: mgr.GetClient(), Config: opts.Inject, OperatorNamespace: opts.OperatorNamespace, Ready: ready}
	return builder.WebhookManagedBy(mgr, &corev1.Pod{}).WithDefaulter(injector).Complete()
}
