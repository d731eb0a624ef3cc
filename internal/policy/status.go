package policy

import (
	"sort"

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
	// ForeignProxyConfigs are pods the policy decides for whose PodProxyConfig is
	// held by an object the operator did not create, sorted.
	ForeignProxyConfigs []string
}

// NamespaceStatus is what the resolver says of a namespace policy.
type NamespaceStatus struct {
	// EffectiveMode is the namespace's mode after inheritance and the floor.
	EffectiveMode Mode
	// SelectedPods counts the meshed pods whose pod-wide mode the namespace policy
	// decides (not those a workload policy's mode decides).
	SelectedPods int32
	BelowFloor   bool
	// ForeignProxyConfigs: as in WorkloadStatus, for the pods it decides.
	ForeignProxyConfigs []string
}

// MeshStatus counts the meshed pods of the whole mesh.
type MeshStatus struct {
	MeshedNamespaces int32
	MeshedPods       int32
	// WithoutSidecar counts meshed pods that carry no proxy.
	WithoutSidecar int32
	// ForeignProxyConfigs counts meshed pods whose PodProxyConfig is not the operator's.
	ForeignProxyConfigs int32
	Strict              int32
	Permissive          int32
	Disable             int32
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

// WorkloadPolicyStatus computes one workload policy's status; ok is false when the
// index does not hold it.
func (ix *Index) WorkloadPolicyStatus(namespace, name string) (s WorkloadStatus, ok bool) {
	s, ok = ix.WorkloadPolicyStatuses(namespace)[name]
	return s, ok
}

// WorkloadPolicyStatuses computes the status of every workload policy of a namespace
// in one pass over its pods.
func (ix *Index) WorkloadPolicyStatuses(namespace string) map[string]WorkloadStatus {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, found := ix.namespaces[namespace]
	if !found {
		return nil
	}
	floor := ix.floorLocked()
	statuses := make(map[string]*WorkloadStatus, len(n.workloads))
	winners := map[string]map[string]bool{}
	undeclared := map[string]map[int32]bool{}
	for name, w := range n.workloads {
		s := &WorkloadStatus{Invalid: w.Invalid, BelowFloor: isSet(w.Mode) && Weaker(w.Mode, floor)}
		for _, svc := range w.Services {
			if _, exists := n.services[svc]; !exists {
				s.MissingServices = append(s.MissingServices, svc)
			}
		}
		for _, p := range w.Ports {
			s.BelowFloor = s.BelowFloor || Weaker(p.Mode, floor)
		}
		statuses[name] = s
	}
	for _, pod := range n.pods {
		if !n.meshed(pod) {
			continue
		}
		cands := candidates(n, pod)
		if len(cands) == 0 {
			continue
		}
		winner := cands[0]
		statuses[winner.Name].SelectedPods++
		if n.foreign[pod.Name] {
			statuses[winner.Name].ForeignProxyConfigs = append(statuses[winner.Name].ForeignProxyConfigs, pod.Name)
		}
		for _, p := range winner.Ports {
			if !declares(pod, p.Port) {
				if undeclared[winner.Name] == nil {
					undeclared[winner.Name] = map[int32]bool{}
				}
				undeclared[winner.Name][p.Port] = true
			}
		}
		for _, loser := range cands[1:] {
			statuses[loser.Name].ConflictedPods = append(statuses[loser.Name].ConflictedPods, pod.Name)
			if winners[loser.Name] == nil {
				winners[loser.Name] = map[string]bool{}
			}
			winners[loser.Name][winner.Name] = true
		}
	}
	out := make(map[string]WorkloadStatus, len(statuses))
	for name, s := range statuses {
		sort.Strings(s.ConflictedPods)
		sort.Strings(s.MissingServices)
		sort.Strings(s.ForeignProxyConfigs)
		for w := range winners[name] {
			s.Winners = append(s.Winners, w)
		}
		sort.Strings(s.Winners)
		for port := range undeclared[name] {
			s.UndeclaredPorts = append(s.UndeclaredPorts, port)
		}
		sort.Slice(s.UndeclaredPorts, func(i, j int) bool { return s.UndeclaredPorts[i] < s.UndeclaredPorts[j] })
		out[name] = *s
	}
	return out
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
		if !n.meshed(pod) {
			continue
		}
		if cands := candidates(n, pod); len(cands) > 0 && isSet(cands[0].Mode) {
			continue
		}
		s.SelectedPods++
		if n.foreign[pod.Name] {
			s.ForeignProxyConfigs = append(s.ForeignProxyConfigs, pod.Name)
		}
	}
	sort.Strings(s.ForeignProxyConfigs)
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
			if !n.meshed(pod) {
				continue
			}
			meshedHere = true
			s.MeshedPods++
			if !pod.Sidecar {
				s.WithoutSidecar++
			}
			if n.foreign[pod.Name] {
				s.ForeignProxyConfigs++
			}
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
