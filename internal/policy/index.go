package policy

import (
	"slices"
	"sort"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Index holds the resolver's inputs, per namespace. It is safe for concurrent use:
// writers are the informer event handlers, readers the reconcilers and webhooks.
type Index struct {
	mu         sync.RWMutex
	mesh       *Mesh
	namespaces map[string]*nsIndex
	// operatorNamespace is never meshed.
	operatorNamespace string
}

type nsIndex struct {
	operatorNamespace string            // the Index's, for Meshed
	labels            map[string]string // nil while the Namespace object is unknown
	policy            *NamespacePolicy
	pods              map[string]*Pod
	services          map[string]*Service
	workloads         map[string]*WorkloadPolicy

	// anchored files each valid selector policy under one of its In requirements
	// (key, value): a pod can only match policies filed under one of its own labels.
	// The rest (targetRefs, or selectors without an In requirement) are scanned.
	anchored   map[labelPair][]*WorkloadPolicy
	unanchored []*WorkloadPolicy

	// podsByLabel finds the pods that carry a label, so that a policy's pods are found
	// through its anchor instead of a scan of the namespace.
	podsByLabel map[labelPair]map[string]*Pod

	// foreign are the pods whose PodProxyConfig name is held by an object the
	// operator did not create.
	foreign map[string]bool
}

func (n *nsIndex) addPod(p *Pod) {
	if old, ok := n.pods[p.Name]; ok {
		n.removePod(old)
	}
	n.pods[p.Name] = p
	for k, v := range p.Labels {
		lp := labelPair{k, v}
		if n.podsByLabel[lp] == nil {
			n.podsByLabel[lp] = map[string]*Pod{}
		}
		n.podsByLabel[lp][p.Name] = p
	}
}

func (n *nsIndex) removePod(p *Pod) {
	delete(n.pods, p.Name)
	delete(n.foreign, p.Name)
	for k, v := range p.Labels {
		lp := labelPair{k, v}
		delete(n.podsByLabel[lp], p.Name)
		if len(n.podsByLabel[lp]) == 0 {
			delete(n.podsByLabel, lp)
		}
	}
}

// anchor is the In requirement a selector policy is filed under, if any.
func anchor(w *WorkloadPolicy) (requirement, bool) {
	if w.Invalid != "" || w.Selector == nil {
		return requirement{}, false
	}
	for _, r := range w.requirements {
		if r.op == metav1.LabelSelectorOpIn {
			return r, true
		}
	}
	return requirement{}, false
}

// podsFor calls fn for each pod that could match w: those carrying its anchor label,
// or every pod when it has none.
func (n *nsIndex) podsFor(w *WorkloadPolicy, fn func(*Pod)) {
	r, ok := anchor(w)
	if !ok {
		for _, p := range n.pods {
			fn(p)
		}
		return
	}
	for _, v := range r.values {
		for _, p := range n.podsByLabel[labelPair{r.key, v}] {
			fn(p)
		}
	}
}

type labelPair struct{ key, value string }

// reindex rebuilds the anchored lookup after a workload policy changed.
func (n *nsIndex) reindex() {
	n.anchored = map[labelPair][]*WorkloadPolicy{}
	n.unanchored = n.unanchored[:0]
	for _, w := range n.workloads {
		if w.Invalid != "" {
			continue
		}
		r, ok := anchor(w)
		if !ok {
			n.unanchored = append(n.unanchored, w)
			continue
		}
		for _, v := range r.values {
			k := labelPair{r.key, v}
			n.anchored[k] = append(n.anchored[k], w)
		}
	}
}

// selectedPods are the meshed pods that any of the policies applies to, sorted.
func (n *nsIndex) selectedPods(policies ...*WorkloadPolicy) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range policies {
		if w == nil {
			continue
		}
		n.podsFor(w, func(pod *Pod) {
			if !seen[pod.Name] && n.meshed(pod) && applies(w, n, labels.Set(pod.Labels)) {
				seen[pod.Name] = true
				out = append(out, pod.Name)
			}
		})
	}
	sort.Strings(out)
	return out
}

func (n *nsIndex) empty() bool {
	return n.labels == nil && n.policy == nil && len(n.pods) == 0 && len(n.services) == 0 && len(n.workloads) == 0
}

// IndexOption configures an Index.
type IndexOption func(*Index)

// WithOperatorNamespace names the operator's namespace, whose pods are never meshed.
func WithOperatorNamespace(ns string) IndexOption {
	return func(ix *Index) { ix.operatorNamespace = ns }
}

// NewIndex returns an empty index: no mesh policy, no namespaces.
func NewIndex(opts ...IndexOption) *Index {
	ix := &Index{namespaces: map[string]*nsIndex{}}
	for _, o := range opts {
		o(ix)
	}
	return ix
}

// OperatorNamespace is the namespace whose pods are never meshed ("" for none).
func (ix *Index) OperatorNamespace() string { return ix.operatorNamespace }

func (ix *Index) ns(name string) *nsIndex {
	n, ok := ix.namespaces[name]
	if !ok {
		n = &nsIndex{operatorNamespace: ix.operatorNamespace, pods: map[string]*Pod{}, services: map[string]*Service{}, workloads: map[string]*WorkloadPolicy{},
			anchored: map[labelPair][]*WorkloadPolicy{}, podsByLabel: map[labelPair]map[string]*Pod{}}
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
	ix.ns(p.Namespace).addPod(p)
}

// DeletePod removes a pod.
func (ix *Index) DeletePod(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if n, ok := ix.namespaces[namespace]; ok {
		if p, ok := n.pods[name]; ok {
			n.removePod(p)
		}
		ix.gc(namespace)
	}
}

// ApplyService adds or replaces a Service, and returns the meshed pods whose
// resolution it can change: those its old or new selector selects, when a workload
// policy targets it.
func (ix *Index) ApplyService(s *Service) (affected []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := ix.ns(s.Namespace)
	old := n.services[s.Name]
	n.services[s.Name] = s
	return n.serviceAffected(s.Name, old, s)
}

// DeleteService removes a Service, and returns the meshed pods it can change.
func (ix *Index) DeleteService(namespace, name string) (affected []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n, ok := ix.namespaces[namespace]
	if !ok {
		return nil
	}
	old := n.services[name]
	delete(n.services, name)
	affected = n.serviceAffected(name, old, nil)
	ix.gc(namespace)
	return affected
}

func (n *nsIndex) serviceAffected(name string, services ...*Service) []string {
	targeted := false
	for _, w := range n.workloads {
		if slices.Contains(w.Services, name) {
			targeted = true
			break
		}
	}
	if !targeted {
		return nil
	}
	var selectors []*WorkloadPolicy
	for _, s := range services {
		if s != nil && len(s.Selector) > 0 {
			selectors = append(selectors, &WorkloadPolicy{Selector: labels.SelectorFromValidatedSet(s.Selector)})
		}
	}
	return n.selectedPods(selectors...)
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

// ApplyWorkloadPolicy adds or replaces a workload policy, and returns the meshed pods
// whose resolution it can change: those its old or its new version selects.
func (ix *Index) ApplyWorkloadPolicy(p *WorkloadPolicy) (affected []string) {
	byPort := func(a, b PortMode) int { return int(a.Port) - int(b.Port) }
	if !slices.IsSortedFunc(p.Ports, byPort) {
		cp := *p
		cp.Ports = slices.Clone(p.Ports)
		slices.SortFunc(cp.Ports, byPort)
		p = &cp
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := ix.ns(p.Namespace)
	old := n.workloads[p.Name]
	n.workloads[p.Name] = p
	n.reindex()
	return n.selectedPods(old, p)
}

// DeleteWorkloadPolicy removes a workload policy, and returns the meshed pods it
// selected.
func (ix *Index) DeleteWorkloadPolicy(namespace, name string) (affected []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n, ok := ix.namespaces[namespace]
	if !ok {
		return nil
	}
	old := n.workloads[name]
	delete(n.workloads, name)
	n.reindex()
	affected = n.selectedPods(old)
	ix.gc(namespace)
	return affected
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

// SetForeignProxyConfig records whether the PodProxyConfig of a pod is held by an
// object the operator did not create (and so leaves alone); it reports whether that
// changed.
func (ix *Index) SetForeignProxyConfig(namespace, pod string, foreign bool) (changed bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n, ok := ix.namespaces[namespace]
	if !ok {
		return false
	}
	if n.foreign[pod] == foreign {
		return false
	}
	if foreign {
		if n.foreign == nil {
			n.foreign = map[string]bool{}
		}
		n.foreign[pod] = true
	} else {
		delete(n.foreign, pod)
	}
	return true
}
