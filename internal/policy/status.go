package policy

import (
	"sort"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// WorkloadStatus is what the resolver says of one workload policy.
type WorkloadStatus struct {
	// SelectedPods counts the meshed pods the policy decides for.
	SelectedPods int32
	// ConflictedPods are the meshed pods it selects but loses to an older policy,
	// sorted; Winners are those older policies, sorted.
	ConflictedPods []string
	Winners        []string
	// UndeclaredPorts are port-level entries that some selected pod does not declare.
	UndeclaredPorts []int32
	// MissingServices are targetRefs that name no existing Service, sorted.
	MissingServices []string
	// BelowFloor lists what the policy asks for that the mesh floor raises.
	BelowFloor bool
	// Invalid says why the policy selects nothing.
	Invalid string
}

// NamespaceStatus is what the resolver says of a namespace policy.
type NamespaceStatus struct {
	// EffectiveMode is the namespace's mode after inheritance and the floor.
	EffectiveMode Mode
	// SelectedPods counts the meshed pods whose pod-wide mode the namespace policy
	// decides (not those a workload policy's mode decides).
	SelectedPods int32
	BelowFloor   bool
}

// MeshStatus counts the meshed pods of the whole mesh.
type MeshStatus struct {
	MeshedNamespaces int32
	MeshedPods       int32
	Strict           int32
	Permissive       int32
	Disable          int32
}

// Floor is the mesh minimumMode (DISABLE without a mesh policy).
func (ix *Index) Floor() Mode {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.floorLocked()
}

func (ix *Index) floorLocked() Mode {
	if ix.mesh != nil && isSet(ix.mesh.MinimumMode) {
		return ix.mesh.MinimumMode
	}
	return v1alpha1.ModeDisable
}

// WorkloadPolicyStatus computes a workload policy's status; ok is false when the index
// does not hold it.
func (ix *Index) WorkloadPolicyStatus(namespace, name string) (s WorkloadStatus, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, found := ix.namespaces[namespace]
	if !found {
		return s, false
	}
	w, found := n.workloads[name]
	if !found {
		return s, false
	}
	s.Invalid = w.Invalid
	for _, svc := range w.Services {
		if _, exists := n.services[svc]; !exists {
			s.MissingServices = append(s.MissingServices, svc)
		}
	}
	sort.Strings(s.MissingServices)
	floor := ix.floorLocked()
	s.BelowFloor = isSet(w.Mode) && Weaker(w.Mode, floor)
	for _, p := range w.Ports {
		s.BelowFloor = s.BelowFloor || Weaker(p.Mode, floor)
	}

	winners := map[string]bool{}
	undeclared := map[int32]bool{}
	for _, pod := range n.pods {
		if !Meshed(pod.Labels, n.labels) || !applies(w, n, labels.Set(pod.Labels)) {
			continue
		}
		cands := candidates(n, pod)
		if cands[0] != w {
			s.ConflictedPods = append(s.ConflictedPods, pod.Name)
			winners[cands[0].Name] = true
			continue
		}
		s.SelectedPods++
		for _, p := range w.Ports {
			if !declares(pod, p.Port) {
				undeclared[p.Port] = true
			}
		}
	}
	sort.Strings(s.ConflictedPods)
	for name := range winners {
		s.Winners = append(s.Winners, name)
	}
	sort.Strings(s.Winners)
	for port := range undeclared {
		s.UndeclaredPorts = append(s.UndeclaredPorts, port)
	}
	sort.Slice(s.UndeclaredPorts, func(i, j int) bool { return s.UndeclaredPorts[i] < s.UndeclaredPorts[j] })
	return s, true
}

func declares(pod *Pod, port int32) bool {
	i := sort.Search(len(pod.Ports), func(i int) bool { return pod.Ports[i] >= port })
	return i < len(pod.Ports) && pod.Ports[i] == port
}

// NamespacePolicyStatus computes the status of a namespace's policy; ok is false when
// the namespace has none.
func (ix *Index) NamespacePolicyStatus(namespace string) (s NamespaceStatus, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, found := ix.namespaces[namespace]
	if !found || n.policy == nil {
		return s, false
	}
	floor := ix.floorLocked()
	mode := n.policy.Mode
	decides := isSet(mode)
	if !decides {
		mode = v1alpha1.MeshDefaultMode
		if ix.mesh != nil {
			mode = ix.mesh.Mode
		}
	}
	s.BelowFloor = decides && Weaker(mode, floor)
	if Weaker(mode, floor) {
		mode = floor
	}
	s.EffectiveMode = mode
	if !decides {
		return s, true
	}
	for _, pod := range n.pods {
		if !Meshed(pod.Labels, n.labels) {
			continue
		}
		if cands := candidates(n, pod); len(cands) > 0 && isSet(cands[0].Mode) {
			continue
		}
		s.SelectedPods++
	}
	return s, true
}

// MeshStatus counts meshed namespaces and pods, and pods by effective mode.
func (ix *Index) MeshStatus() MeshStatus {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var s MeshStatus
	for _, n := range ix.namespaces {
		meshedHere := false
		for _, pod := range n.pods {
			if !Meshed(pod.Labels, n.labels) {
				continue
			}
			meshedHere = true
			s.MeshedPods++
			switch resolve(ix.mesh, n, pod).Mode {
			case v1alpha1.ModeStrict:
				s.Strict++
			case v1alpha1.ModePermissive:
				s.Permissive++
			case v1alpha1.ModeDisable:
				s.Disable++
			}
		}
		if meshedHere {
			s.MeshedNamespaces++
		}
	}
	return s
}
