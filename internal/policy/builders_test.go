package policy

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

const (
	strict     = v1alpha1.ModeStrict
	permissive = v1alpha1.ModePermissive
	disable    = v1alpha1.ModeDisable
	unset      = v1alpha1.ModeUnset
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type podOpt func(*Pod)

func pod(ns, name string, opts ...podOpt) *Pod {
	p := &Pod{Namespace: ns, Name: name, UID: ns + "-" + name + "-uid", ServiceAccount: "default", Labels: map[string]string{}, Sidecar: true}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withLabels(kv ...string) podOpt {
	return func(p *Pod) {
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withPorts(ports ...int32) podOpt { return func(p *Pod) { p.Ports = ports } }

func excluding(ports ...int32) podOpt { return func(p *Pod) { p.ExcludedInboundPorts = ports } }

func withSA(sa string) podOpt { return func(p *Pod) { p.ServiceAccount = sa } }

type wlOpt func(*WorkloadPolicy)

// workload builds a workload policy created `age` minutes after the epoch.
func workload(ns, name string, age int, opts ...wlOpt) *WorkloadPolicy {
	w := &WorkloadPolicy{Namespace: ns, Name: name, Created: epoch.Add(time.Duration(age) * time.Minute), Mode: unset}
	for _, o := range opts {
		o(w)
	}
	return w
}

func selecting(kv ...string) wlOpt {
	return func(w *WorkloadPolicy) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		ls := &metav1.LabelSelector{MatchLabels: m}
		sel, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			panic(err)
		}
		w.Selector, w.SelectorKey, w.requirements = sel, SelectorKey(ls), canonicalRequirements(ls)
	}
}

func targeting(services ...string) wlOpt {
	return func(w *WorkloadPolicy) { w.Services = slices.Compact(slices.Sorted(slices.Values(services))) }
}

// selectingExpr selects by a full label selector.
func selectingExpr(ls *metav1.LabelSelector) wlOpt {
	return func(w *WorkloadPolicy) {
		sel, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			panic(err)
		}
		w.Selector, w.SelectorKey, w.requirements = sel, SelectorKey(ls), canonicalRequirements(ls)
	}
}

func mode(m Mode) wlOpt { return func(w *WorkloadPolicy) { w.Mode = m } }

func port(p int32, m Mode) wlOpt {
	return func(w *WorkloadPolicy) { w.Ports = append(w.Ports, PortMode{Port: p, Mode: m}) }
}

func mesh(m, floor Mode) *Mesh {
	return &Mesh{Mode: m, MinimumMode: floor, TrustDomain: "cluster.local", HasIssuer: true}
}

func meshedNS(name string) Namespace {
	return Namespace{Name: name, Labels: map[string]string{InjectLabel: InjectEnabled}}
}

func nsPolicy(ns string, m Mode) *NamespacePolicy { return &NamespacePolicy{Namespace: ns, Mode: m} }

func service(ns, name string, kv ...string) *Service {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &Service{Namespace: ns, Name: name, Selector: m}
}

// world is the inputs of one test, applied to a fresh index.
type world struct {
	mesh       *Mesh
	namespaces []Namespace
	nsPolicies []*NamespacePolicy
	services   []*Service
	workloads  []*WorkloadPolicy
	pods       []*Pod
}

func (w world) index() *Index {
	ix := NewIndex()
	ix.SetMesh(w.mesh)
	for _, n := range w.namespaces {
		ix.ApplyNamespace(n)
	}
	for _, p := range w.nsPolicies {
		ix.ApplyNamespacePolicy(p)
	}
	for _, s := range w.services {
		ix.ApplyService(s)
	}
	for _, p := range w.workloads {
		ix.ApplyWorkloadPolicy(p)
	}
	for _, p := range w.pods {
		ix.ApplyPod(p)
	}
	return ix
}
