package policy

import (
	"slices"
	"sort"
	"sync"
)

// Index holds the resolver's inputs, per namespace. It is safe for concurrent use:
// writers are the informer event handlers, readers the reconcilers and webhooks.
type Index struct {
	mu         sync.RWMutex
	mesh       *Mesh
	namespaces map[string]*nsIndex
}

type nsIndex struct {
	labels    map[string]string // nil while the Namespace object is unknown
	policy    *NamespacePolicy
	pods      map[string]*Pod
	services  map[string]*Service
	workloads map[string]*WorkloadPolicy
}

func (n *nsIndex) empty() bool {
	return n.labels == nil && n.policy == nil && len(n.pods) == 0 && len(n.services) == 0 && len(n.workloads) == 0
}

// NewIndex returns an empty index: no mesh policy, no namespaces.
func NewIndex() *Index {
	return &Index{namespaces: map[string]*nsIndex{}}
}

func (ix *Index) ns(name string) *nsIndex {
	n, ok := ix.namespaces[name]
	if !ok {
		n = &nsIndex{pods: map[string]*Pod{}, services: map[string]*Service{}, workloads: map[string]*WorkloadPolicy{}}
		ix.namespaces[name] = n
	}
	return n
}

func (ix *Index) gc(name string) {
	if n, ok := ix.namespaces[name]; ok && n.empty() {
		delete(ix.namespaces, name)
	}
}

// SetMesh sets the mesh policy; nil means there is none.
func (ix *Index) SetMesh(m *Mesh) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.mesh = m
}

// ApplyNamespace adds or replaces a namespace.
func (ix *Index) ApplyNamespace(n Namespace) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	labels := n.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	ix.ns(n.Name).labels = labels
}

// DeleteNamespace forgets a namespace's labels (its objects go with their own deletes).
func (ix *Index) DeleteNamespace(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[name]; ok {
		n.labels = nil
		ix.gc(name)
	}
}

// ApplyPod adds or replaces a pod.
func (ix *Index) ApplyPod(p *Pod) {
	if !slices.IsSorted(p.Ports) {
		cp := *p
		cp.Ports = slices.Clone(p.Ports)
		slices.Sort(cp.Ports)
		p = &cp
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.ns(p.Namespace).pods[p.Name] = p
}

// DeletePod removes a pod.
func (ix *Index) DeletePod(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[namespace]; ok {
		delete(n.pods, name)
		ix.gc(namespace)
	}
}

// ApplyService adds or replaces a Service.
func (ix *Index) ApplyService(s *Service) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.ns(s.Namespace).services[s.Name] = s
}

// DeleteService removes a Service.
func (ix *Index) DeleteService(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[namespace]; ok {
		delete(n.services, name)
		ix.gc(namespace)
	}
}

// ApplyNamespacePolicy adds or replaces a namespace's policy.
func (ix *Index) ApplyNamespacePolicy(p *NamespacePolicy) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.ns(p.Namespace).policy = p
}

// DeleteNamespacePolicy removes a namespace's policy.
func (ix *Index) DeleteNamespacePolicy(namespace string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[namespace]; ok {
		n.policy = nil
		ix.gc(namespace)
	}
}

// ApplyWorkloadPolicy adds or replaces a workload policy.
func (ix *Index) ApplyWorkloadPolicy(p *WorkloadPolicy) {
	byPort := func(a, b PortMode) int { return int(a.Port) - int(b.Port) }
	if !slices.IsSortedFunc(p.Ports, byPort) {
		cp := *p
		cp.Ports = slices.Clone(p.Ports)
		slices.SortFunc(cp.Ports, byPort)
		p = &cp
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.ns(p.Namespace).workloads[p.Name] = p
}

// DeleteWorkloadPolicy removes a workload policy.
func (ix *Index) DeleteWorkloadPolicy(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[namespace]; ok {
		delete(n.workloads, name)
		ix.gc(namespace)
	}
}

// Namespaces lists the namespaces the index knows anything of, sorted.
func (ix *Index) Namespaces() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	names := make([]string, 0, len(ix.namespaces))
	for name := range ix.namespaces {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Pods lists the names of the pods of a namespace, meshed or not, sorted.
func (ix *Index) Pods(namespace string) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, ok := ix.namespaces[namespace]
	if !ok {
		return nil
	}
	names := make([]string, 0, len(n.pods))
	for name := range n.pods {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
