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

// floorErrors refuses modes weaker than the mesh floor. With an old version (an
// update), only a mode that the change lowers below the floor, or a new port entry
// below it, is refused: a policy that already sat below the floor (the floor was
// raised over it, which is allowed) may keep its mode or raise it.
func floorErrors(floor Mode, mode Mode, ports []PortMode, portIndex map[int32]int, old *modes) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	why := fmt.Sprintf("is weaker than the mesh minimumMode %s (MeshMTLSPolicy default); use %s or stronger, or lower the mesh minimumMode", floor, floor)
	if isSet(mode) && Weaker(mode, floor) && !old.kept(old.mode(), mode) {
		errs = append(errs, field.Invalid(spec.Child("mode"), string(mode), why))
	}
	for _, p := range ports {
		if Weaker(p.Mode, floor) && !old.kept(old.port(p.Port), p.Mode) {
			errs = append(errs, field.Invalid(spec.Child("portLevelMTLS").Index(portIndex[p.Port]).Child("mode"), string(p.Mode), fmt.Sprintf("port %d %s", p.Port, why)))
		}
	}
	return errs
}

// modes are the modes of a policy's old version; nil on create.
type modes struct {
	Mode  Mode
	Ports []PortMode
}

func (m *modes) mode() Mode {
	if m == nil {
		return ""
	}
	return m.Mode
}

func (m *modes) port(port int32) Mode {
	if m == nil {
		return ""
	}
	for _, p := range m.Ports {
		if p.Port == port {
			return p.Mode
		}
	}
	return ""
}

// kept reports whether now is the old mode or a stronger one, so the change lowers
// nothing.
func (m *modes) kept(before, now Mode) bool {
	return m != nil && isSet(before) && !Weaker(now, before)
}

// AdmitNamespacePolicy checks a NamespaceMTLSPolicy to be created (old nil) or
// updated against the mesh floor.
func (ix *Index) AdmitNamespacePolicy(p, old *NamespacePolicy) Admission {
	var was *modes
	if old != nil {
		was = &modes{Mode: old.Mode}
	}
	return Admission{Errors: floorErrors(ix.Floor(), p.Mode, nil, nil, was)}
}

// finding is one reason to refuse a workload policy because of another one.
type finding struct {
	other string
	// same is "selector" or "targetRefs" when the two are equal; "" when they only
	// share pods.
	same string
	pods []string // meshed pods in common, sorted
}

// workloadFindings lists, per other valid policy of the namespace, the equalities
// and the pods in common with p, and the policies p may overlap with later.
func (ix *Index) workloadFindings(n *nsIndex, p *WorkloadPolicy) (found []finding, mayOverlap []string) {
	others := make([]*WorkloadPolicy, 0, len(n.workloads))
	for _, o := range n.workloads {
		if o.Name != p.Name && o.Invalid == "" {
			others = append(others, o)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Name < others[j].Name })

	// Meshed pods p would select, by name.
	var mine []*Pod
	n.podsFor(p, func(pod *Pod) {
		if n.meshed(pod) && applies(p, n, labels.Set(pod.Labels)) {
			mine = append(mine, pod)
		}
	})
	sort.Slice(mine, func(i, j int) bool { return mine[i].Name < mine[j].Name })

	for _, o := range others {
		f := finding{other: o.Name}
		switch {
		case p.Selector != nil && o.Selector != nil && p.SelectorKey == o.SelectorKey:
			f.same = "selector"
		case p.Selector == nil && o.Selector == nil && slices.Equal(p.Services, o.Services):
			f.same = "targetRefs"
		}
		for _, pod := range mine {
			if applies(o, n, labels.Set(pod.Labels)) {
				f.pods = append(f.pods, pod.Name)
			}
		}
		if f.same != "" || len(f.pods) > 0 {
			found = append(found, f)
		} else if ix.mayShare(n, p, o) {
			mayOverlap = append(mayOverlap, o.Name)
		}
	}
	return found, mayOverlap
}

// AdmitWorkloadPolicy checks a WorkloadMTLSPolicy to be created (old nil) or updated
// (old is the object's previous version). The index holds the world before the
// change; a policy of the same name is the object's old version and is ignored.
// portIndex maps each port entry to its index in the request, for field paths. It
// refuses:
//   - a mode or port mode below the mesh floor;
//   - a selector semantically equal to another policy's, or targetRefs equal as sets;
//   - selecting an existing meshed pod that another policy selects,
//
// naming the other policy and up to five pods in common. On an update it refuses only
// what the change makes worse: a mode lowered below the floor, a new equality, a pod
// in common that the old version did not share. So a policy that is already
// conflicted or below the floor still takes metadata edits, finalizer removal, an
// unchanged re-apply and a raised mode.
//
// It warns where another policy's selection could overlap but no pod is selected by
// both yet.
func (ix *Index) AdmitWorkloadPolicy(p, old *WorkloadPolicy, portIndex map[int32]int) Admission {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var a Admission
	var was *modes
	if old != nil {
		was = &modes{Mode: old.Mode, Ports: old.Ports}
	}
	a.Errors = floorErrors(ix.floorLocked(), p.Mode, p.Ports, portIndex, was)
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

	found, overlaps := ix.workloadFindings(n, p)
	before := map[string]finding{}
	if old != nil && old.Invalid == "" {
		oldFound, _ := ix.workloadFindings(n, old)
		for _, f := range oldFound {
			before[f.other] = f
		}
	}
	for _, f := range found {
		prev, had := before[f.other]
		newEquality := f.same != "" && prev.same != f.same
		newPods := !had || !subset(f.pods, prev.pods)
		if !newEquality && !newPods {
			continue // the old version shared as much: the change makes nothing worse
		}
		inCommon := ""
		if len(f.pods) > 0 {
			inCommon = "; pods in common: " + NameFew(f.pods)
		}
		switch {
		case f.same == "selector":
			a.Errors = append(a.Errors, field.Invalid(what, p.SelectorKey,
				fmt.Sprintf("WorkloadMTLSPolicy %q in namespace %s has the same selector; change that policy instead of adding another%s", f.other, p.Namespace, inCommon)))
		case f.same == "targetRefs":
			a.Errors = append(a.Errors, field.Invalid(what, strings.Join(p.Services, ","),
				fmt.Sprintf("WorkloadMTLSPolicy %q in namespace %s targets the same Services; change that policy instead of adding another%s", f.other, p.Namespace, inCommon)))
		default:
			a.Errors = append(a.Errors, field.Forbidden(what, fmt.Sprintf(
				"would select pods that WorkloadMTLSPolicy %q in namespace %s already selects: %s; a pod may be decided by one workload policy only: narrow this policy's selection or that one's",
				f.other, p.Namespace, NameFew(f.pods))))
		}
	}
	for i, o := range overlaps {
		if i == maxWarned {
			// Bounded, like every other list in an admission answer.
			a.Warnings = append(a.Warnings, fmt.Sprintf("%s may overlap with %d more WorkloadMTLSPolicies in namespace %s", what, len(overlaps)-maxWarned, p.Namespace))
			break
		}
		a.Warnings = append(a.Warnings, fmt.Sprintf(
			"%s may overlap with WorkloadMTLSPolicy %q in namespace %s: no pod is selected by both yet, but a pod that is would be decided by the older policy only", what, o, p.Namespace))
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

// proxyPorts are the proxy's own ports, which an exclusion may name harmlessly: they
// are never an application's (outbound capture 15001, inbound capture 15006, health
// 15021, metrics 15090).
var proxyPorts = map[int32]bool{15001: true, 15006: true, 15021: true, 15090: true}

// AdmitPod checks the capture exclusions of a meshed pod against the mesh floor: an
// inbound port taken out of capture receives plaintext past the proxy, which a
// minimumMode above DISABLE forbids. Only the proxy's own ports may be named.
func (ix *Index) AdmitPod(p *Pod) field.ErrorList {
	floor := ix.Floor()
	if !Weaker(v1alpha1.ModeDisable, floor) {
		return nil
	}
	var bypass []string
	for _, port := range p.ExcludedInboundPorts {
		if !proxyPorts[port] {
			bypass = append(bypass, fmt.Sprint(port))
		}
	}
	if len(bypass) == 0 {
		return nil
	}
	return field.ErrorList{field.Forbidden(field.NewPath("metadata", "annotations").Key(AnnotationExcludeInboundPorts), fmt.Sprintf(
		"takes inbound ports %s out of capture, which lets plaintext reach them past the proxy, but the mesh minimumMode is %s (MeshMTLSPolicy default): remove those ports from the annotation, or lower the mesh minimumMode to DISABLE",
		strings.Join(bypass, ", "), floor))}
}

// NamespaceLabels returns the labels of a namespace the index knows; ok is false for
// one it has not seen.
func (ix *Index) NamespaceLabels(namespace string) (labels map[string]string, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if n, found := ix.namespaces[namespace]; found && n.labels != nil {
		return n.labels, true
	}
	return nil, false
}
