package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// maxNamedPods is how many pods in common a refusal names.
const maxNamedPods = 5

// maxWarned is how many policies a floor warning lists.
const maxWarned = 10

// Admission is a verdict on an object about to be created or updated: field errors
// refuse it, warnings are returned to the client with the object admitted.
type Admission struct {
	Errors   field.ErrorList
	Warnings []string
}

// floorErrors refuses modes weaker than the mesh floor.
func floorErrors(floor Mode, mode Mode, ports []PortMode, portIndex map[int32]int) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	why := fmt.Sprintf("is weaker than the mesh minimumMode %s (MeshMTLSPolicy default); use %s or stronger, or lower the mesh minimumMode", floor, floor)
	if isSet(mode) && Weaker(mode, floor) {
		errs = append(errs, field.Invalid(spec.Child("mode"), string(mode), why))
	}
	for _, p := range ports {
		if Weaker(p.Mode, floor) {
			errs = append(errs, field.Invalid(spec.Child("portLevelMTLS").Index(portIndex[p.Port]).Child("mode"), string(p.Mode), fmt.Sprintf("port %d %s", p.Port, why)))
		}
	}
	return errs
}

// AdmitNamespacePolicy checks a NamespaceMTLSPolicy against the mesh floor.
func (ix *Index) AdmitNamespacePolicy(p *NamespacePolicy) Admission {
	return Admission{Errors: floorErrors(ix.Floor(), p.Mode, nil, nil)}
}

// AdmitWorkloadPolicy checks a WorkloadMTLSPolicy to be created or updated (the index
// holds the world before the change; a policy of the same name is the object's old
// version and is ignored). portIndex maps each port entry to its index in the request,
// for field paths. It refuses:
//   - a mode or port mode below the mesh floor;
//   - a selector semantically equal to another policy's, or targetRefs equal as sets;
//   - selecting an existing meshed pod that another policy selects, naming the other
//     policy and up to five pods in common.
//
// It warns where another policy's selection could overlap but no pod is selected by
// both yet.
func (ix *Index) AdmitWorkloadPolicy(p *WorkloadPolicy, portIndex map[int32]int) Admission {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var a Admission
	a.Errors = floorErrors(ix.floorLocked(), p.Mode, p.Ports, portIndex)
	if p.Invalid != "" {
		return a
	}
	n, ok := ix.namespaces[p.Namespace]
	if !ok {
		return a
	}
	spec := field.NewPath("spec")
	what := spec.Child("selector")
	if p.Selector == nil {
		what = spec.Child("targetRefs")
	}

	others := make([]*WorkloadPolicy, 0, len(n.workloads))
	for _, o := range n.workloads {
		if o.Name != p.Name && o.Invalid == "" {
			others = append(others, o)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Name < others[j].Name })

	// Pods the new policy would select, by name.
	var mine []*Pod
	n.podsFor(p, func(pod *Pod) {
		if Meshed(pod.Labels, n.labels) && applies(p, n, labels.Set(pod.Labels)) {
			mine = append(mine, pod)
		}
	})
	sort.Slice(mine, func(i, j int) bool { return mine[i].Name < mine[j].Name })

	for _, o := range others {
		switch {
		case p.Selector != nil && o.Selector != nil && p.SelectorKey == o.SelectorKey:
			a.Errors = append(a.Errors, field.Invalid(what, p.SelectorKey,
				fmt.Sprintf("WorkloadMTLSPolicy %q in namespace %s has the same selector; change that policy instead of adding another", o.Name, p.Namespace)))
			continue
		case p.Selector == nil && o.Selector == nil && slices.Equal(p.Services, o.Services):
			a.Errors = append(a.Errors, field.Invalid(what, strings.Join(p.Services, ","),
				fmt.Sprintf("WorkloadMTLSPolicy %q in namespace %s targets the same Services; change that policy instead of adding another", o.Name, p.Namespace)))
			continue
		}
		var common []string
		for _, pod := range mine {
			if applies(o, n, labels.Set(pod.Labels)) {
				common = append(common, pod.Name)
			}
		}
		if len(common) > 0 {
			a.Errors = append(a.Errors, field.Forbidden(what, fmt.Sprintf(
				"would select pods that WorkloadMTLSPolicy %q in namespace %s already selects: %s; a pod may be decided by one workload policy only: narrow this policy's selection or that one's",
				o.Name, p.Namespace, NameFew(common))))
			continue
		}
		if ix.mayShare(n, p, o) {
			a.Warnings = append(a.Warnings, fmt.Sprintf(
				"%s may overlap with WorkloadMTLSPolicy %q in namespace %s: no pod is selected by both yet, but a pod that is would be decided by the older policy only", what, o.Name, p.Namespace))
		}
	}
	return a
}

// NameFew joins names for a message: the first five, then how many more.
func NameFew(names []string) string {
	if len(names) <= maxNamedPods {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s (and %d more)", strings.Join(names[:maxNamedPods], ", "), len(names)-maxNamedPods)
}

// selections are the requirement lists a policy selects by: its selector, or the
// selector of each existing Service it targets.
func selections(n *nsIndex, w *WorkloadPolicy) [][]requirement {
	if w.Selector != nil {
		return [][]requirement{w.requirements}
	}
	var out [][]requirement
	for _, name := range w.Services {
		if svc, ok := n.services[name]; ok && len(svc.Selector) > 0 {
			out = append(out, matchLabelsRequirements(svc.Selector))
		}
	}
	return out
}

// mayShare reports whether two policies could one day select the same pod.
func (ix *Index) mayShare(n *nsIndex, a, b *WorkloadPolicy) bool {
	if a.Selector == nil && b.Selector == nil {
		for _, s := range a.Services {
			if slices.Contains(b.Services, s) {
				return true
			}
		}
	}
	for _, x := range selections(n, a) {
		for _, y := range selections(n, b) {
			if mayOverlap(x, y) {
				return true
			}
		}
	}
	return false
}

// BelowFloor lists, for warnings, the policies whose modes are weaker than floor:
// "NamespaceMTLSPolicy shop/default (PERMISSIVE)", at most ten and a count of the rest.
func (ix *Index) BelowFloor(floor Mode) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var below []string
	for name, n := range ix.namespaces {
		if n.policy != nil && isSet(n.policy.Mode) && Weaker(n.policy.Mode, floor) {
			below = append(below, fmt.Sprintf("NamespaceMTLSPolicy %s/%s (%s)", name, v1alpha1.NamespaceMTLSPolicyName, n.policy.Mode))
		}
		for _, w := range n.workloads {
			weakest := w.Mode
			for _, p := range w.Ports {
				if !isSet(weakest) || Weaker(p.Mode, weakest) {
					weakest = p.Mode
				}
			}
			if isSet(weakest) && Weaker(weakest, floor) {
				below = append(below, fmt.Sprintf("WorkloadMTLSPolicy %s/%s (%s)", name, w.Name, weakest))
			}
		}
	}
	sort.Strings(below)
	if len(below) > maxWarned {
		below = append(below[:maxWarned], fmt.Sprintf("and %d more", len(below)-maxWarned))
	}
	return below
}
