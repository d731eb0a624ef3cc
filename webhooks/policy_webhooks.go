// Package webhooks serves admission: validation of the policy kinds and MTLSRollout,
// and sidecar injection into meshed pods. Handlers are thin: every decision is made by
// internal/policy (the same index and resolver the controllers use), internal/inject
// or internal/rollout.
package webhooks

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
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

func invalidCore(kind, name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(schema.GroupKind{Kind: kind}, name, errs)
}

// Bounds on label selectors, so that the cost of admission (and of the resolver) per
// policy stays bounded. The schema holds the same bounds where it can.
const (
	maxSelectorExpressions = 16
	maxSelectorValues      = 64
	maxSelectorLabels      = 32
)

// validateSelector refuses what metav1.LabelSelectorAsSelector would refuse
// (an unknown operator, In or NotIn without values, Exists or DoesNotExist with
// values, malformed keys or values) with errors that name the field, and selectors
// beyond the bounds above.
func validateSelector(s *metav1.LabelSelector, path *field.Path) field.ErrorList {
	if s == nil {
		return nil
	}
	errs := metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, path)
	if len(s.MatchLabels) > maxSelectorLabels {
		errs = append(errs, field.TooMany(path.Child("matchLabels"), len(s.MatchLabels), maxSelectorLabels))
	}
	if len(s.MatchExpressions) > maxSelectorExpressions {
		errs = append(errs, field.TooMany(path.Child("matchExpressions"), len(s.MatchExpressions), maxSelectorExpressions))
	}
	for i, e := range s.MatchExpressions {
		if len(e.Values) > maxSelectorValues {
			errs = append(errs, field.TooMany(path.Child("matchExpressions").Index(i).Child("values"), len(e.Values), maxSelectorValues))
		}
	}
	return errs
}

// unchanged reports whether an update leaves the spec as it was: metadata edits,
// finalizer removal and unchanged re-applies always pass, so that nothing can leave a
// policy stuck (a foreground delete, an Argo CD prune) whatever its state.
func unchanged(old, new any) bool { return equality.Semantic.DeepEqual(old, new) }

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-workloadmtlspolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=workloadmtlspolicies,verbs=create;update,versions=v1alpha1,name=vworkloadmtlspolicy.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// WorkloadPolicyValidator refuses workload policies that would be ambiguous (equal to
// another policy, or selecting a meshed pod another policy selects) or too weak for the
// mesh floor, and warns of selections that could overlap later.
type WorkloadPolicyValidator struct {
	Index *policy.Index
	Ready func() error
}

var _ admission.Validator[*v1alpha1.WorkloadMTLSPolicy] = &WorkloadPolicyValidator{}

func (v *WorkloadPolicyValidator) validate(old, p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	if old != nil && unchanged(old.Spec, p.Spec) {
		return nil, nil
	}
	if errs := validateSelector(p.Spec.Selector, field.NewPath("spec", "selector")); len(errs) > 0 {
		return nil, invalid("WorkloadMTLSPolicy", p.Name, errs)
	}
	if err := v.Ready(); err != nil {
		return nil, err
	}
	candidate := policy.WorkloadPolicyFrom(p)
	portIndex := map[int32]int{}
	for i, e := range p.Spec.PortLevelMTLS {
		portIndex[e.Port] = i
	}
	var previous *policy.WorkloadPolicy
	if old != nil {
		previous = policy.WorkloadPolicyFrom(old)
	}
	verdict := v.Index.AdmitWorkloadPolicy(candidate, previous, portIndex)
	return verdict.Warnings, invalid("WorkloadMTLSPolicy", p.Name, verdict.Errors)
}

// ValidateCreate implements admission.Validator.
func (v *WorkloadPolicyValidator) ValidateCreate(_ context.Context, p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	return v.validate(nil, p)
}

// ValidateUpdate implements admission.Validator: only what the change makes worse is
// refused.
func (v *WorkloadPolicyValidator) ValidateUpdate(_ context.Context, old, p *v1alpha1.WorkloadMTLSPolicy) (admission.Warnings, error) {
	return v.validate(old, p)
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

func (v *NamespacePolicyValidator) validate(old, p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	if old != nil && unchanged(old.Spec, p.Spec) {
		return nil, nil
	}
	if err := v.Ready(); err != nil {
		return nil, err
	}
	var previous *policy.NamespacePolicy
	if old != nil {
		previous = &policy.NamespacePolicy{Namespace: old.Namespace, Mode: old.Spec.Mode}
	}
	verdict := v.Index.AdmitNamespacePolicy(&policy.NamespacePolicy{Namespace: p.Namespace, Mode: p.Spec.Mode}, previous)
	return verdict.Warnings, invalid("NamespaceMTLSPolicy", p.Name, verdict.Errors)
}

// ValidateCreate implements admission.Validator.
func (v *NamespacePolicyValidator) ValidateCreate(_ context.Context, p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return v.validate(nil, p)
}

// ValidateUpdate implements admission.Validator: only a mode lowered below the floor
// is refused.
func (v *NamespacePolicyValidator) ValidateUpdate(_ context.Context, old, p *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return v.validate(old, p)
}

// ValidateDelete implements admission.Validator.
func (v *NamespacePolicyValidator) ValidateDelete(context.Context, *v1alpha1.NamespaceMTLSPolicy) (admission.Warnings, error) {
	return nil, nil
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-meshmtlspolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=meshmtlspolicies,verbs=create;update;delete,versions=v1alpha1,name=vmeshmtlspolicy.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// MeshPolicyValidator admits raising the floor while policies sit below it (the floor
// overrides them) and warns, listing them. It refuses one delete: MeshMTLSPolicy
// default while its minimumMode is above DISABLE, which would silently drop the floor
// for every pod.
type MeshPolicyValidator struct {
	Index *policy.Index
	Ready func() error
}

var _ admission.Validator[*v1alpha1.MeshMTLSPolicy] = &MeshPolicyValidator{}

func (v *MeshPolicyValidator) warn(old *v1alpha1.MeshMTLSPolicy, p *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	if old != nil && (unchanged(old.Spec, p.Spec) || !policy.Weaker(old.Spec.MinimumMode, p.Spec.MinimumMode)) {
		return nil, nil
	}
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
func (v *MeshPolicyValidator) ValidateDelete(_ context.Context, p *v1alpha1.MeshMTLSPolicy) (admission.Warnings, error) {
	if p.Name != v1alpha1.MeshMTLSPolicyName || !policy.Weaker(v1alpha1.ModeDisable, p.Spec.MinimumMode) {
		return nil, nil
	}
	return nil, apierrors.NewForbidden(schema.GroupResource{Group: group, Resource: "meshmtlspolicies"}, p.Name, fmt.Errorf(
		"deleting it would drop the mesh floor (spec.minimumMode %s) for every pod at once; lower spec.minimumMode to DISABLE first (kubectl patch mmp default --type=merge -p '{\"spec\":{\"minimumMode\":\"DISABLE\"}}'), then delete it", p.Spec.MinimumMode))
}

// +kubebuilder:webhook:path=/validate-security-meshtls-io-v1alpha1-mtlsrollout,mutating=false,failurePolicy=fail,sideEffects=None,groups=security.meshtls.io,resources=mtlsrollouts,verbs=create;update,versions=v1alpha1,name=vmtlsrollout.meshtls.io,admissionReviewVersions=v1,timeoutSeconds=5

// RolloutValidator refuses a rollout whose namespaces overlap with those of another
// rollout that has not finished. On update it refuses only a change of
// namespaceSelector that adds such an overlap: pausing, or any edit that leaves the
// selector as it is, always passes, even when an overlap arose since (a namespace
// labelled for both): a running rollout must always be stoppable.
type RolloutValidator struct {
	Client client.Reader
	Ready  func() error
}

var _ admission.Validator[*v1alpha1.MTLSRollout] = &RolloutValidator{}

func (v *RolloutValidator) validate(ctx context.Context, old, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	if old != nil && (unchanged(old.Spec, r.Spec) || policy.SelectorKey(&old.Spec.NamespaceSelector) == policy.SelectorKey(&r.Spec.NamespaceSelector)) {
		return nil, nil
	}
	sel := &r.Spec.NamespaceSelector
	path := field.NewPath("spec", "namespaceSelector")
	if errs := validateSelector(sel, path); len(errs) > 0 {
		return nil, invalid("MTLSRollout", r.Name, errs)
	}
	if len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		return nil, invalid("MTLSRollout", r.Name, field.ErrorList{field.Required(path,
			"an empty selector selects every namespace, kube-system included; select the namespaces to migrate, e.g. matchLabels: {team: shop}")})
	}
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
	conflicts, err := rollout.Conflicts(r, rollouts.Items, nsLabels)
	if err != nil {
		return nil, invalid("MTLSRollout", r.Name, field.ErrorList{field.Invalid(path, r.Spec.NamespaceSelector, err.Error())})
	}
	if old != nil {
		conflicts = newConflicts(old, conflicts, rollouts.Items, nsLabels)
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

// newConflicts keeps, of the conflicts of an updated rollout, those its old selector
// did not have already: namespaces the change adds to another unfinished rollout's.
func newConflicts(old *v1alpha1.MTLSRollout, conflicts []rollout.Conflict, others []v1alpha1.MTLSRollout, nsLabels map[string]map[string]string) []rollout.Conflict {
	before, err := rollout.Conflicts(old, others, nsLabels)
	if err != nil {
		return conflicts // the old selector selected nothing usable
	}
	had := map[string]map[string]bool{}
	for _, c := range before {
		had[c.Rollout] = map[string]bool{}
		for _, ns := range c.Namespaces {
			had[c.Rollout][ns] = true
		}
	}
	var out []rollout.Conflict
	for _, c := range conflicts {
		seen, ok := had[c.Rollout]
		if !ok {
			out = append(out, c)
			continue
		}
		var added []string
		for _, ns := range c.Namespaces {
			if !seen[ns] {
				added = append(added, ns)
			}
		}
		if len(added) > 0 {
			c.Namespaces = added
			out = append(out, c)
		}
	}
	return out
}

// ValidateCreate implements admission.Validator.
func (v *RolloutValidator) ValidateCreate(ctx context.Context, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return v.validate(ctx, nil, r)
}

// ValidateUpdate implements admission.Validator.
func (v *RolloutValidator) ValidateUpdate(ctx context.Context, old, r *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return v.validate(ctx, old, r)
}

// ValidateDelete implements admission.Validator.
func (v *RolloutValidator) ValidateDelete(context.Context, *v1alpha1.MTLSRollout) (admission.Warnings, error) {
	return nil, nil
}
