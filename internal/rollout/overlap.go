// Package rollout holds the decisions of MTLSRollout: which rollouts may run together,
// and (in later work) the step-by-step promotion state machine. Pure code only.
package rollout

import (
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Finished reports whether a rollout no longer moves namespaces.
func Finished(phase v1alpha1.RolloutPhase) bool {
	switch phase {
	case v1alpha1.RolloutSucceeded, v1alpha1.RolloutRolledBack, v1alpha1.RolloutFailed:
		return true
	}
	return false
}

// Overlap returns the namespaces (by name, in the order given) that both selectors
// select.
func Overlap(a, b labels.Selector, namespaces map[string]map[string]string, order []string) []string {
	var out []string
	for _, name := range order {
		set := labels.Set(namespaces[name])
		if a.Matches(set) && b.Matches(set) {
			out = append(out, name)
		}
	}
	return out
}
