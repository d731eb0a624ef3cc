package webhooks

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// +kubebuilder:webhook:path=/mutate--v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=inject.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5,reinvocationPolicy=IfNeeded

// PodInjector adds the meshtls proxy to pods that are meshed: labelled
// meshtls.io/inject=enabled, or in a namespace so labelled and not opted out. It skips
// host-network pods and the operator's own namespace, and is idempotent. It decides
// "meshed" itself from the cached namespace labels, whatever selectors the webhook
// configuration carries (OLM rewrites namespaceSelectors).
type PodInjector struct {
	Client            client.Reader
	Config            inject.Config
	OperatorNamespace string
	Ready             func() error
}

var _ admission.Defaulter[*corev1.Pod] = &PodInjector{}

// Default implements admission.Defaulter.
func (i *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	namespace := pod.Namespace
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		namespace = req.Namespace
	}
	if namespace == i.OperatorNamespace || inject.Injected(pod) {
		return nil
	}
	if pod.Labels[policy.InjectLabel] == policy.InjectDisabled {
		return nil
	}
	var nsLabels map[string]string
	if pod.Labels[policy.InjectLabel] != policy.InjectEnabled {
		if err := i.Ready(); err != nil {
			return err
		}
		ns := &corev1.Namespace{}
		if err := i.Client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
			return fmt.Errorf("failed to read namespace %s to decide injection: %w", namespace, err)
		}
		nsLabels = ns.Labels
	}
	if !policy.Meshed(pod.Labels, nsLabels) {
		return nil
	}
	if why := inject.Skip(pod); why != "" {
		log.FromContext(ctx).V(1).Info("not injecting", "reason", why)
		return nil
	}
	return inject.Inject(pod, i.Config)
}
