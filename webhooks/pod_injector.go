package webhooks

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// +kubebuilder:webhook:path=/mutate--v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=inject.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5,reinvocationPolicy=IfNeeded

// PodInjector adds the meshtls proxy to meshed pods. "Meshed" is policy.Meshed, the
// very rule the resolver applies (labels, host network, the operator's namespace), so
// a pod gets a sidecar exactly when it gets a PodProxyConfig. It decides from the
// index, whatever selectors the webhook configuration carries (OLM rewrites
// namespaceSelectors).
//
// A pod that arrives with meshtls containers is verified, not trusted: exactly what
// injection would produce passes unchanged (a reinvocation), anything else is refused.
// Capture annotations are validated, and an inbound exclusion that would let
// plaintext past the proxy is refused while the mesh floor is above DISABLE.
type PodInjector struct {
	Index *policy.Index
	// Reader reads a namespace the index has not seen yet (created a moment ago).
	Reader client.Reader
	Config inject.Config
	Ready  func() error
}

var _ admission.Defaulter[*corev1.Pod] = &PodInjector{}

// Default implements admission.Defaulter.
func (i *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	if err := i.Ready(); err != nil {
		return err
	}
	candidate := policy.PodFrom(pod)
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		candidate.Namespace = req.Namespace
	}
	nsLabels, known := i.Index.NamespaceLabels(candidate.Namespace)
	if !known && candidate.Labels[policy.InjectLabel] == "" {
		ns := &corev1.Namespace{}
		if err := i.Reader.Get(ctx, client.ObjectKey{Name: candidate.Namespace}, ns); err != nil {
			return fmt.Errorf("failed to read namespace %s to decide injection: %w", candidate.Namespace, err)
		}
		nsLabels = ns.Labels
	}
	if !policy.Meshed(candidate, nsLabels, i.Index.OperatorNamespace()) {
		if pod.Spec.HostNetwork {
			log.FromContext(ctx).V(1).Info("not injecting a host-network pod")
		}
		return nil
	}
	errs := inject.ValidateAnnotations(pod)
	errs = append(errs, i.Index.AdmitPod(candidate)...)
	if policy.Weaker(v1alpha1.ModeDisable, i.Index.Floor()) {
		errs = append(errs, inject.ValidateEscapes(pod)...)
	}
	if err := invalidPod(pod, errs); err != nil {
		return err
	}
	if err := inject.Inject(pod, i.Config); err != nil {
		return invalidPod(pod, field.ErrorList{field.Forbidden(field.NewPath("spec"), err.Error())})
	}
	return nil
}

func invalidPod(pod *corev1.Pod, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	return invalidCore("Pod", name, errs)
}
