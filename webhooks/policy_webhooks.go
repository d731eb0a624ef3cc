// Package webhooks serves admission: validation of the policy kinds and MTLSRollout,
// and sidecar injection into meshed pods. Handlers are thin: every decision is made by
// internal/policy (the same index and resolver the controllers use), internal/inject
// or internal/rollout.
package webhooks

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
	"github.com/meshtls/meshtls-operator/internal/rollout"
)

var group = v1alpha1.GroupVersion.Group

func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(schema.GroupKind{Group: group, Kind: kind}, name, errs)
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-workloadmtlspolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=workloadmtlspolicies,verbs=create;update,versions=v1alpha1,name=vworkloadmtlspolicy.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// WorkloadPolicyValidator refuses workload policies that would be ambiguous (equal to
// another policy, or selecting a meshed pod another policy selects) or too weak for the
// mesh floor, and warns of selections that could overlap later.
type WorkloadPolicyValidator struct {
	Index *policy.Index
	Ready func() error
}

var _ admission.Validator[*v1alpha1.WorkloadMTLSPolicy] = &WorkloadPolicyValidator{}

func (v *WorkloadPolicyValidator) validate(p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	if err := v.Ready(); err != nil {
		return nil, err
	}
	candidate := policy.WorkloadPolicyFrom(p)
	portIndex := map[int32]int{}
	for i, e := range p.Spec.PortLevelMTLS {
		portIndex[e.Port] = i
	}
	verdict := v.Index.AdmitWorkloadPolicy(candidate, portIndex)
	return verdict.Warnings, invalid("WorkloadMTLSPolicy", p.Name, verdict.Errors)
}

// ValidateCreate implements admission.Validator.
func (v *WorkloadPolicyValidator) ValidateCreate(_ context.Context, p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	return v.validate(p)
}

// ValidateUpdate implements admission.Validator.
func (v *WorkloadPolicyValidator) ValidateUpdate(_ context.Context, _, p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	return v.validate(p)
}

// ValidateDelete implements admission.Validator.
func (v *WorkloadPolicyValidator) ValidateDelete(context.Context, *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	return nil, nil
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-namespacemtlspolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=namespacemtlspolicies,verbs=create;update,versions=v1alpha1,name=vnamespacemtlspolicy.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// NamespacePolicyValidator refuses a namespace mode below the mesh floor.
type NamespacePolicyValidator struct {
	Index *policy.Index
	Ready func() error
}

var _ admission.Validator[*v1alpha1.NamespaceMTLSPolicy] = &NamespacePolicyValidator{}

func (v *NamespacePolicyValidator) validate(p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	if err := v.Ready(); err != nil {
		return nil, err
	}
	verdict := v.Index.AdmitNamespacePolicy(&policy.NamespacePolicy{Namespace: p.Namespace, Mode: p.Spec.Mode})
	return verdict.Warnings, invalid("NamespaceMTLSPolicy", p.Name, verdict.Errors)
}

// ValidateCreate implements admission.Validator.
func (v *NamespacePolicyValidator) ValidateCreate(_ context.Context, p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return v.validate(p)
}

// ValidateUpdate implements admission.Validator.
func (v *NamespacePolicyValidator) ValidateUpdate(_ context.Context, _, p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return v.validate(p)
}

// ValidateDelete implements admission.Validator.
func (v *NamespacePolicyValidator) ValidateDelete(context.Context, *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return nil, nil
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-meshmtlspolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=meshmtlspolicies,verbs=create;update,versions=v1alpha1,name=vmeshmtlspolicy.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// MeshPolicyValidator admits raising the floor while policies sit below it (the floor
// overrides them) and warns, listing them.
type MeshPolicyValidator struct {
	Index *policy.Index
	Ready func() error
}

var _ admission.Validator[*v1alpha1.MeshMTLSPolicy] = &MeshPolicyValidator{}

func (v *MeshPolicyValidator) warn(old *v1alpha1.MeshMTLSPolicy, p *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	if err := v.Ready(); err != nil {
		return nil, err
	}
	floor := p.Spec.MinimumMode
	if old != nil && !policy.Weaker(old.Spec.MinimumMode, floor) {
		return nil, nil
	}
	below := v.Index.BelowFloor(floor)
	if len(below) == 0 {
		return nil, nil
	}
	return admission.Warnings{fmt.Sprintf("spec.minimumMode %s overrides policies that ask for less, which will be raised to it: %s", floor, strings.Join(below, ", "))}, nil
}

// ValidateCreate implements admission.Validator.
func (v *MeshPolicyValidator) ValidateCreate(_ context.Context, p *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	return v.warn(nil, p)
}

// ValidateUpdate implements admission.Validator.
func (v *MeshPolicyValidator) ValidateUpdate(_ context.Context, old, p *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	return v.warn(old, p)
}

// ValidateDelete implements admission.Validator.
func (v *MeshPolicyValidator) ValidateDelete(context.Context, *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	return nil, nil
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-mtlsrollout,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=mtlsrollouts,verbs=create;update,versions=v1alpha1,name=vmtlsrollout.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// RolloutValidator refuses a rollout whose namespaces overlap with those of another
// rollout that has not finished.
type RolloutValidator struct {
	Client client.Reader
	Ready  func() error
}

var _ admission.Validator[*v1alpha1.MTLSRollout] = &RolloutValidator{}

func (v *RolloutValidator) validate(ctx context.Context, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	if err := v.Ready(); err != nil {
		return nil, err
	}
	rollouts := &v1alpha1.MTLSRolloutList{}
	if err := v.Client.List(ctx, rollouts); err != nil {
		return nil, fmt.Errorf("failed to list MTLSRollouts: %w", err)
	}
	namespaces := &corev1.NamespaceList{}
	if err := v.Client.List(ctx, namespaces); err != nil {
		return nil, fmt.Errorf("failed to list namespaces: %w", err)
	}
	nsLabels := make(map[string]map[string]string, len(namespaces.Items))
	for _, ns := range namespaces.Items {
		nsLabels[ns.Name] = ns.Labels
	}
	path := field.NewPath("spec", "namespaceSelector")
	conflicts, err := rollout.Conflicts(r, rollouts.Items, nsLabels)
	if err != nil {
		return nil, invalid("MTLSRollout", r.Name, field.ErrorList{field.Invalid(path, r.Spec.NamespaceSelector, err.Error())})
	}
	var errs field.ErrorList
	for _, c := range conflicts {
		what := "the same namespaces"
		if len(c.Namespaces) > 0 {
			what = "namespaces " + policy.NameFew(c.Namespaces)
		}
		errs = append(errs, field.Forbidden(path, fmt.Sprintf(
			"selects %s, which MTLSRollout %q (phase %q) is still rolling out; wait for it to finish, or narrow this selector", what, c.Rollout, c.Phase)))
	}
	return nil, invalid("MTLSRollout", r.Name, errs)
}

// ValidateCreate implements admission.Validator.
func (v *RolloutValidator) ValidateCreate(ctx context.Context, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return v.validate(ctx, r)
}

// ValidateUpdate implements admission.Validator.
func (v *RolloutValidator) ValidateUpdate(ctx context.Context, _, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return v.validate(ctx, r)
}

// ValidateDelete implements admission.Validator.
func (v *RolloutValidator) ValidateDelete(context.Context, *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return nil, nil
}
