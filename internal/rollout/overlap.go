// Package rollout holds the decisions of MTLSRollout: which rollouts may run together
// (Conflicts, for admission), and the step-by-step promotion state machine (Step) that
// moves namespaces to STRICT and back. Pure code only: the controller gathers an
// Observation, calls Step, writes the status it returns and carries out its actions.
package rollout

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/policy"
)

// Finished reports whether a rollout no longer moves namespaces.
func Finished(phase v1alpha1.RolloutPhase) bool {
	switch phase {
	case v1alpha1.RolloutSucceeded, v1alpha1.RolloutRolledBack, v1alpha1.RolloutFailed:
		return true
	}
	return false
}

// Conflict is an unfinished rollout that would move some of the same namespaces.
type Conflict struct {
	Rollout string
	Phase   v1alpha1.RolloutPhase
	// Namespaces are the existing namespaces both select, sorted; empty when the
	// selectors are the same but select no namespace yet.
	Namespaces []string
}

// Conflicts returns the unfinished rollouts among others (r itself excluded, by name)
// whose namespaceSelector selects an existing namespace that r's selects too, or is
// the same selector. namespaces maps each namespace to its labels.
func Conflicts(r *v1alpha1.MTLSRollout, others []v1alpha1.MTLSRollout, namespaces map[string]map[string]string) ([]Conflict, error) {
	mine, err := metav1.LabelSelectorAsSelector(&r.Spec.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("spec.namespaceSelector: %w", err)
	}
	names := make([]string, 0, len(namespaces))
	for name := range namespaces {
		names = append(names, name)
	}
	sort.Strings(names)
	myKey := policy.SelectorKey(&r.Spec.NamespaceSelector)

	var out []Conflict
	for i := range others {
		other := &others[i]
		if other.Name == r.Name || Finished(other.Status.Phase) {
			continue
		}
		theirs, err := metav1.LabelSelectorAsSelector(&other.Spec.NamespaceSelector)
		if err != nil {
			continue // the schema refuses such selectors; an old object selects nothing
		}
		var common []string
		for _, name := range names {
			set := labels.Set(namespaces[name])
			if mine.Matches(set) && theirs.Matches(set) {
				common = append(common, name)
			}
		}
		if len(common) > 0 || myKey == policy.SelectorKey(&other.Spec.NamespaceSelector) {
			out = append(out, Conflict{Rollout: other.Name, Phase: other.Status.Phase, Namespaces: common})
		}
	}
	return out, nil
}
