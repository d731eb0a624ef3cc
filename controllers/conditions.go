package controllers

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// maxNamed is how many pods a condition message names before it counts the rest.
const maxNamed = 5

func setCondition(conds *[]metav1.Condition, generation int64, typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: message, ObservedGeneration: generation,
	})
}

func namedList(names []string) string {
	if len(names) <= maxNamed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamed], ", "), len(names)-maxNamed)
}

func floorMessage(floor policy.Mode, below bool, what string) (string, string) {
	if below {
		return v1alpha1.ReasonBelowMinimumMode, fmt.Sprintf("%s is below the mesh minimumMode %s and is raised to it", what, floor)
	}
	return v1alpha1.ReasonAtOrAboveMinimumMode, fmt.Sprintf("%s is at or above the mesh minimumMode", what)
}

// workloadStatus is the status of a WorkloadMTLSPolicy from the resolver's verdict.
// Ready is True only when the policy is in force as written: accepted and not
// conflicted.
func workloadStatus(p *v1alpha1.WorkloadMTLSPolicy, s policy.WorkloadStatus, floor policy.Mode) v1alpha1.WorkloadMTLSPolicyStatus {
	out := *p.Status.DeepCopy()
	gen := p.Generation
	out.ObservedGeneration = gen
	out.SelectedPods = s.SelectedPods
	out.UndeclaredPorts = s.UndeclaredPorts

	accepted, reason, msg := true, v1alpha1.ReasonAccepted, "the policy is in force"
	switch {
	case s.Invalid != "":
		accepted, reason, msg = false, v1alpha1.ReasonInvalid, s.Invalid
	case len(s.MissingServices) > 0:
		accepted, reason, msg = false, v1alpha1.ReasonTargetNotFound,
			fmt.Sprintf("spec.targetRefs names Services that do not exist in namespace %s: %s", p.Namespace, strings.Join(s.MissingServices, ", "))
	}
	if accepted && len(s.UndeclaredPorts) > 0 {
		msg = fmt.Sprintf("the policy is in force; warning: some selected pods do not declare ports %v, which are enforced all the same", s.UndeclaredPorts)
	}
	setCondition(&out.Conditions, gen, v1alpha1.ConditionAccepted, accepted, reason, msg)

	if len(s.ConflictedPods) > 0 {
		setCondition(&out.Conditions, gen, v1alpha1.ConditionConflicted, true, v1alpha1.ReasonConflicted,
			fmt.Sprintf("pods %s are also selected by the older WorkloadMTLSPolicy %s, which decides for them",
				namedList(s.ConflictedPods), strings.Join(s.Winners, ", ")))
	} else {
		setCondition(&out.Conditions, gen, v1alpha1.ConditionConflicted, false, v1alpha1.ReasonNoConflict, "no other policy selects this policy's pods")
	}

	what := "every mode of this policy"
	if s.BelowFloor {
		what = "a mode of this policy"
	}
	fr, fm := floorMessage(floor, s.BelowFloor, what)
	setCondition(&out.Conditions, gen, v1alpha1.ConditionMinimumModeApplied, s.BelowFloor, fr, fm)

	switch {
	case !accepted:
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, false, reason, msg)
	case len(s.ConflictedPods) > 0:
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, false, v1alpha1.ReasonConflicted, "the policy loses some pods to an older policy")
	case len(s.ForeignProxyConfigs) > 0:
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, false, v1alpha1.ReasonProxyConfigNotOwned, foreignMessage(p.Namespace, s.ForeignProxyConfigs))
	default:
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, true, v1alpha1.ReasonReconciled, fmt.Sprintf("decides for %d meshed pods", s.SelectedPods))
	}
	return out
}

// namespaceStatus is the status of a NamespaceMTLSPolicy from the resolver's verdict.
func namespaceStatus(p *v1alpha1.NamespaceMTLSPolicy, s policy.NamespaceStatus, floor policy.Mode) v1alpha1.NamespaceMTLSPolicyStatus {
	out := *p.Status.DeepCopy()
	gen := p.Generation
	out.ObservedGeneration = gen
	out.EffectiveMode = s.EffectiveMode
	out.SelectedPods = s.SelectedPods
	setCondition(&out.Conditions, gen, v1alpha1.ConditionAccepted, true, v1alpha1.ReasonAccepted, "the policy is in force")
	fr, fm := floorMessage(floor, s.BelowFloor, fmt.Sprintf("spec.mode %s", p.Spec.Mode))
	setCondition(&out.Conditions, gen, v1alpha1.ConditionMinimumModeApplied, s.BelowFloor, fr, fm)
	if len(s.ForeignProxyConfigs) > 0 {
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, false, v1alpha1.ReasonProxyConfigNotOwned, foreignMessage(p.Namespace, s.ForeignProxyConfigs))
	} else {
		setCondition(&out.Conditions, gen, v1alpha1.ConditionReady, true, v1alpha1.ReasonReconciled,
			fmt.Sprintf("effective mode %s for %d meshed pods", s.EffectiveMode, s.SelectedPods))
	}
	return out
}

// foreignMessage says which pods run without their resolved configuration because a
// PodProxyConfig of their name is not the operator's, and what to do.
func foreignMessage(namespace string, pods []string) string {
	return fmt.Sprintf("the PodProxyConfigs of pods %s in namespace %s were not created by meshtls-operator, which leaves them alone, so those pods do not get the configuration this policy resolves: delete them (kubectl delete podproxyconfig -n %s <name>) and the operator creates the pods' own",
		namedList(pods), namespace, namespace)
}

// meshStatus is the status of the MeshMTLSPolicy from the mesh-wide counts.
func meshStatus(p *v1alpha1.MeshMTLSPolicy, s policy.MeshStatus) v1alpha1.MeshMTLSPolicyStatus {
	out := *p.Status.DeepCopy()
	out.ObservedGeneration = p.Generation
	out.MeshedNamespaces = s.MeshedNamespaces
	out.MeshedPods = s.MeshedPods
	out.PodsWithoutSidecar = s.WithoutSidecar
	out.PodsByMode = &v1alpha1.ModeCounts{Strict: s.Strict, Permissive: s.Permissive, Disable: s.Disable}
	setCondition(&out.Conditions, p.Generation, v1alpha1.ConditionReady, true, v1alpha1.ReasonReconciled,
		fmt.Sprintf("%d meshed pods in %d namespaces", s.MeshedPods, s.MeshedNamespaces))
	return out
}
