package policy

import (
	"sort"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Result is the resolved inbound configuration of one meshed pod.
type Result struct {
	Pod Pod
	// Mode is the effective mode of every port not in Ports.
	Mode Mode
	// Ports are the ports whose effective mode differs from Mode, sorted by port.
	Ports []PortMode
	// Decision is the trail: one entry per level that applied, narrowest first.
	Decision []v1alpha1.Decision
	// Workload is the workload policy that decides for the pod; empty if none.
	Workload string
	// Losers are the other workload policies that select the pod, sorted.
	Losers []string
	// TrustDomain and HasIssuer come from the mesh.
	TrustDomain string
	HasIssuer   bool
	// Uncaptured are the pod's capture-excluded inbound ports whose effective mode
	// is not DISABLE: plaintext reaches the application there past the proxy.
	Uncaptured []int32
}

// PortMode returns the effective mode of a port.
func (r Result) PortMode(port int32) Mode {
	for _, p := range r.Ports {
		if p.Port == port {
			return p.Mode
		}
	}
	return r.Mode
}

// Meshed is the one rule that decides whether a pod is meshed, for injection and
// resolution alike: labelled meshtls.io/inject=enabled, or in a namespace so labelled
// and not labelled meshtls.io/inject=disabled itself; and never a host-network pod, nor
// a pod in the operator's own namespace (operatorNamespace; "" for none).
func Meshed(pod *Pod, namespaceLabels map[string]string, operatorNamespace string) bool {
	if pod.HostNetwork || (operatorNamespace != "" && pod.Namespace == operatorNamespace) {
		return false
	}
	switch pod.Labels[InjectLabel] {
	case InjectEnabled:
		return true
	case InjectDisabled:
		return false
	}
	return namespaceLabels[InjectLabel] == InjectEnabled
}

// meshed applies Meshed to a pod of this namespace.
func (n *nsIndex) meshed(pod *Pod) bool { return Meshed(pod, n.labels, n.operatorNamespace) }

// Resolve resolves one pod. ok is false when the pod is unknown or not meshed.
func (ix *Index) Resolve(namespace, name string) (r Result, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, found := ix.namespaces[namespace]
	if !found {
		return Result{}, false
	}
	pod, found := n.pods[name]
	if !found || !n.meshed(pod) {
		return Result{}, false
	}
	return resolve(ix.mesh, n, pod), true
}

// applies reports whether a workload policy applies to a pod: its selector matches the
// pod's labels, or one of its targetRefs names an existing Service whose non-empty
// selector matches them.
func applies(w *WorkloadPolicy, n *nsIndex, podLabels labels.Set) bool {
	if w.Invalid != "" {
		return false
	}
	if w.Selector != nil {
		return w.Selector.Matches(podLabels)
	}
	for _, name := range w.Services {
		svc, ok := n.services[name]
		if ok && len(svc.Selector) > 0 && labels.SelectorFromValidatedSet(svc.Selector).Matches(podLabels) {
			return true
		}
	}
	return false
}

// candidates are the workload policies that apply to a pod, the winner first.
func candidates(n *nsIndex, pod *Pod) []*WorkloadPolicy {
	var out []*WorkloadPolicy
	set := labels.Set(pod.Labels)
	for k, v := range pod.Labels {
		for _, w := range n.anchored[labelPair{k, v}] {
			if applies(w, n, set) {
				out = append(out, w)
			}
		}
	}
	for _, w := range n.unanchored {
		if applies(w, n, set) {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return older(out[i], out[j]) })
	return out
}

func resolve(mesh *Mesh, n *nsIndex, pod *Pod) Result {
	r := Result{Pod: *pod}
	meshMode, floor := v1alpha1.MeshDefaultMode, v1alpha1.ModeDisable
	if mesh != nil {
		meshMode, floor = mesh.Mode, mesh.MinimumMode
		if !isSet(floor) {
			floor = v1alpha1.ModeDisable
		}
		r.TrustDomain, r.HasIssuer = mesh.TrustDomain, mesh.HasIssuer
	}

	// 1. The workload layer.
	cands := candidates(n, pod)
	var workload *WorkloadPolicy
	if len(cands) > 0 {
		workload = cands[0]
		r.Workload = workload.Name
		for _, loser := range cands[1:] {
			r.Losers = append(r.Losers, loser.Name)
		}
		sort.Strings(r.Losers)
	}

	// 2.-3. The pod-wide mode: the workload's, else the namespace's, else the mesh's.
	var mode Mode
	if workload != nil {
		r.Decision = append(r.Decision, v1alpha1.Decision{
			Scope: v1alpha1.ScopeWorkload, Kind: "WorkloadMTLSPolicy", Name: workload.Name,
			Mode: modeOrUnset(workload.Mode), Ports: portNumbers(workload.Ports),
		})
		if isSet(workload.Mode) {
			mode = workload.Mode
		}
	}
	if mode == "" && n.policy != nil && isSet(n.policy.Mode) {
		mode = n.policy.Mode
		r.Decision = append(r.Decision, v1alpha1.Decision{
			Scope: v1alpha1.ScopeNamespace, Kind: "NamespaceMTLSPolicy", Name: v1alpha1.NamespaceMTLSPolicyName, Mode: mode,
		})
	}
	if mode == "" {
		mode = meshMode
		d := v1alpha1.Decision{Scope: v1alpha1.ScopeMesh, Mode: mode}
		if mesh != nil {
			d.Kind, d.Name = "MeshMTLSPolicy", v1alpha1.MeshMTLSPolicyName
		}
		r.Decision = append(r.Decision, d)
	}

	// 4. The floor, on the pod-wide mode and on each port entry.
	var raised []int32
	floorRaised := false
	if Weaker(mode, floor) {
		mode, floorRaised = floor, true
	}
	r.Mode = mode
	if workload != nil {
		for _, p := range workload.Ports {
			pm := p.Mode
			if Weaker(pm, floor) {
				pm = floor
				raised = append(raised, p.Port)
			}
			if pm != mode {
				r.Ports = append(r.Ports, PortMode{Port: p.Port, Mode: pm})
			}
		}
	}
	if floorRaised || len(raised) > 0 {
		r.Decision = append(r.Decision, v1alpha1.Decision{
			Scope: v1alpha1.ScopeMinimumMode, Kind: "MeshMTLSPolicy", Name: v1alpha1.MeshMTLSPolicyName, Mode: floor, Ports: raised,
		})
	}
	for _, port := range pod.ExcludedInboundPorts {
		if r.PortMode(port) != v1alpha1.ModeDisable {
			r.Uncaptured = append(r.Uncaptured, port)
		}
	}
	return r
}

func modeOrUnset(m Mode) Mode {
	if isSet(m) {
		return m
	}
	return v1alpha1.ModeUnset
}

func portNumbers(ports []PortMode) []int32 {
	if len(ports) == 0 {
		return nil
	}
	out := make([]int32, len(ports))
	for i, p := range ports {
		out[i] = p.Port
	}
	return out
}
