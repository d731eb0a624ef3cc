package policy

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// benchWorld is the scale: 10,000 meshed pods across 500 namespaces with 2,000
// workload policies (4 per namespace: 3 selectors, 1 Service attachment), 2 port
// entries each, and a namespace policy in every other namespace.
func benchWorld() world {
	const namespaces, podsPerNS, apps = 500, 20, 5
	w := world{mesh: mesh(permissive, disable)}
	for n := 0; n < namespaces; n++ {
		ns := fmt.Sprintf("ns-%03d", n)
		w.namespaces = append(w.namespaces, meshedNS(ns))
		if n%2 == 0 {
			w.nsPolicies = append(w.nsPolicies, nsPolicy(ns, strict))
		}
		w.services = append(w.services, service(ns, "app-3", "app", "app-3"))
		for a := 0; a < 3; a++ {
			w.workloads = append(w.workloads, workload(ns, fmt.Sprintf("wl-%d", a), a,
				selecting("app", fmt.Sprintf("app-%d", a)), mode(strict), port(8080, disable), port(9090, permissive)))
		}
		w.workloads = append(w.workloads, workload(ns, "wl-svc", 3, targeting("app-3"), port(8080, disable)))
		for p := 0; p < podsPerNS; p++ {
			w.pods = append(w.pods, pod(ns, fmt.Sprintf("pod-%02d", p),
				withLabels("app", fmt.Sprintf("app-%d", p%apps), "pod-template-hash", "7d9f8"), withPorts(8080, 9090)))
		}
	}
	return w
}

// BenchmarkResolveAll resolves every pod of the bench world once per iteration
// (target: under 100 ms on the 2-core machine).
func BenchmarkResolveAll(b *testing.B) {
	w := benchWorld()
	ix := w.index()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, p := range w.pods {
			if _, ok := ix.Resolve(p.Namespace, p.Name); !ok {
				b.Fatal("pod not meshed")
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/full")
}

// BenchmarkResolveAllSpecs adds building each PodProxyConfig spec and its hash, which
// is what a full resync really costs.
func BenchmarkResolveAllSpecs(b *testing.B) {
	w := benchWorld()
	ix := w.index()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, p := range w.pods {
			r, _ := ix.Resolve(p.Namespace, p.Name)
			_ = ProxyConfigSpec(r)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/full")
}

// BenchmarkSelectorBaseline is the reference: the bare label matching of every pod
// against every selector of its namespace, with no resolver around it.
func BenchmarkSelectorBaseline(b *testing.B) {
	w := benchWorld()
	byNS := map[string][]labels.Selector{}
	svc := map[string]map[string]string{}
	for _, s := range w.services {
		svc[s.Namespace] = s.Selector
	}
	for _, wl := range w.workloads {
		sel := wl.Selector
		if sel == nil {
			sel = labels.SelectorFromValidatedSet(svc[wl.Namespace])
		}
		byNS[wl.Namespace] = append(byNS[wl.Namespace], sel)
	}
	b.ResetTimer()
	matched := 0
	for b.Loop() {
		for _, p := range w.pods {
			for _, sel := range byNS[p.Namespace] {
				if sel.Matches(labels.Set(p.Labels)) {
					matched++
				}
			}
		}
	}
	if matched == 0 {
		b.Fatal("nothing matched")
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/full")
}

// BenchmarkPodLabelChange is the incremental cost of one pod-label change: apply the
// relabelled pod to the index and resolve it again (target: under 50 µs).
func BenchmarkPodLabelChange(b *testing.B) {
	w := benchWorld()
	ix := w.index()
	base := *w.pods[4321]
	relabelled := []*Pod{{}, {}}
	for i, app := range []string{"app-1", "app-2"} {
		p := base
		p.Labels = map[string]string{"app": app, "pod-template-hash": "7d9f8"}
		relabelled[i] = &p
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		p := relabelled[i%2]
		i++
		ix.ApplyPod(p)
		r, _ := ix.Resolve(p.Namespace, p.Name)
		_ = ProxyConfigSpec(r)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/change")
}

// BenchmarkAdmitWorkloadPolicy is the decision behind one WorkloadMTLSPolicy create in
// a namespace of 5,000 meshed pods and 1,000 workload policies.
func BenchmarkAdmitWorkloadPolicy(b *testing.B) {
	w := world{namespaces: []Namespace{meshedNS("big")}}
	for i := 0; i < 1000; i++ {
		w.workloads = append(w.workloads, workload("big", fmt.Sprintf("app-%d", i), i, selecting("app", fmt.Sprintf("app-%d", i)), mode(strict)))
	}
	for i := 0; i < 5000; i++ {
		w.pods = append(w.pods, pod("big", fmt.Sprintf("pod-%d", i), withLabels("app", fmt.Sprintf("app-%d", i%1000))))
	}
	ix := w.index()
	candidate := workload("big", "new", 2000, selecting("app", "new"), mode(strict))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if a := ix.AdmitWorkloadPolicy(candidate, nil, nil); len(a.Errors) > 0 {
			b.Fatal(a.Errors)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/admission")
}
