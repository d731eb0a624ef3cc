package policy

import (
	"fmt"
	"slices"
	"testing"
)

// byteReader turns fuzz input into small choices; it yields zeros once exhausted.
type byteReader struct{ b []byte }

func (r *byteReader) next(n int) int {
	if len(r.b) == 0 {
		return 0
	}
	v := int(r.b[0]) % n
	r.b = r.b[1:]
	return v
}

var fuzzModes = []Mode{unset, strict, permissive, disable}

// randomWorld builds a world of up to 3 namespaces from fuzz input: labels drawn from a
// small alphabet so that selectors overlap and conflict often.
func randomWorld(data []byte) world {
	r := &byteReader{b: data}
	var w world
	floor := fuzzModes[1+r.next(3)]
	meshMode := fuzzModes[1+r.next(3)]
	if Weaker(meshMode, floor) {
		meshMode = floor // the schema refuses a mesh below its own floor
	}
	if r.next(4) > 0 {
		w.mesh = mesh(meshMode, floor)
	}
	values := []string{"a", "b", "c"}
	for n := 0; n < 1+r.next(3); n++ {
		ns := fmt.Sprintf("ns%d", n)
		if r.next(3) > 0 {
			w.namespaces = append(w.namespaces, meshedNS(ns))
		} else {
			w.namespaces = append(w.namespaces, Namespace{Name: ns})
		}
		if r.next(2) == 0 {
			w.nsPolicies = append(w.nsPolicies, nsPolicy(ns, fuzzModes[r.next(4)]))
		}
		for s := 0; s < r.next(3); s++ {
			w.services = append(w.services, service(ns, fmt.Sprintf("svc%d", s), "app", values[r.next(3)]))
		}
		for p := 0; p < r.next(4); p++ {
			opts := []wlOpt{mode(fuzzModes[r.next(4)])}
			if r.next(2) == 0 {
				opts = append(opts, selecting("app", values[r.next(3)]))
			} else {
				opts = append(opts, targeting(fmt.Sprintf("svc%d", r.next(3))))
			}
			for k := 0; k < r.next(3); k++ {
				opts = append(opts, port(int32(8080+r.next(3)), fuzzModes[1+r.next(3)]))
			}
			w.workloads = append(w.workloads, workload(ns, fmt.Sprintf("w%d", p), r.next(3), opts...))
		}
		for p := 0; p < 1+r.next(5); p++ {
			opts := []podOpt{withLabels("app", values[r.next(3)])}
			if r.next(4) == 0 {
				opts = append(opts, withLabels(InjectLabel, []string{InjectEnabled, InjectDisabled}[r.next(2)]))
			}
			w.pods = append(w.pods, pod(ns, fmt.Sprintf("p%d", p), opts...))
		}
	}
	// Port entries must be unique per policy, as the schema's listMapKey makes them.
	for _, wl := range w.workloads {
		seen := map[int32]bool{}
		wl.Ports = slices.DeleteFunc(wl.Ports, func(p PortMode) bool {
			dup := seen[p.Port]
			seen[p.Port] = true
			return dup
		})
	}
	return w
}

func reversed(w world) world {
	r := world{mesh: w.mesh}
	r.namespaces = slices.Clone(w.namespaces)
	slices.Reverse(r.namespaces)
	r.nsPolicies = slices.Clone(w.nsPolicies)
	slices.Reverse(r.nsPolicies)
	r.services = slices.Clone(w.services)
	slices.Reverse(r.services)
	r.workloads = slices.Clone(w.workloads)
	slices.Reverse(r.workloads)
	r.pods = slices.Clone(w.pods)
	slices.Reverse(r.pods)
	return r
}

// checkAffected changes one workload policy and checks that every pod whose
// resolution changed is among the pods ApplyWorkloadPolicy says it affects.
func checkAffected(t *testing.T, w world, ix *Index, data []byte) {
	if len(w.workloads) == 0 {
		return
	}
	r := &byteReader{b: data}
	changed := *w.workloads[r.next(len(w.workloads))]
	changed.Mode = fuzzModes[r.next(4)]
	if r.next(2) == 0 {
		selecting("app", []string{"a", "b", "c"}[r.next(3)])(&changed)
		changed.Services = nil
	}
	before := map[string]string{}
	for _, p := range w.pods {
		before[p.Namespace+"/"+p.Name] = render(ix.Resolve(p.Namespace, p.Name))
	}
	affected := ix.ApplyWorkloadPolicy(&changed)
	for _, p := range w.pods {
		if p.Namespace != changed.Namespace {
			continue
		}
		if after := render(ix.Resolve(p.Namespace, p.Name)); after != before[p.Namespace+"/"+p.Name] && !slices.Contains(affected, p.Name) {
			t.Fatalf("changing %s/%s changed pod %s (%s -> %s), but it is not in the affected list %v",
				changed.Namespace, changed.Name, p.Name, before[p.Namespace+"/"+p.Name], after, affected)
		}
	}
}

// FuzzResolve checks, on random worlds: the result never goes below the floor; a
// winning policy's port entry always decides its port (raised to the floor only); and
// the result does not depend on the order objects were added to the index; and a
// policy change reports every pod it changes.
func FuzzResolve(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 2, 1, 0, 1, 2, 2, 1, 0, 1, 2, 3, 1, 1, 0, 2, 2, 1, 0})
	f.Add([]byte("a world of several namespaces with conflicting workload policies"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w := randomWorld(data)
		ix, rev := w.index(), reversed(w).index()
		floor := disable
		if w.mesh != nil {
			floor = w.mesh.MinimumMode
		}
		policies := map[string]*WorkloadPolicy{}
		for _, wl := range w.workloads {
			policies[wl.Namespace+"/"+wl.Name] = wl
		}
		for _, p := range w.pods {
			r, ok := ix.Resolve(p.Namespace, p.Name)
			r2, ok2 := rev.Resolve(p.Namespace, p.Name)
			if a, b := render(r, ok), render(r2, ok2); a != b {
				t.Fatalf("%s/%s depends on insertion order:\n%s\n%s", p.Namespace, p.Name, a, b)
			}
			if !ok {
				continue
			}
			if Weaker(r.Mode, floor) {
				t.Fatalf("%s/%s: mode %s is below the floor %s", p.Namespace, p.Name, r.Mode, floor)
			}
			effective := map[int32]Mode{}
			for _, pm := range r.Ports {
				if Weaker(pm.Mode, floor) {
					t.Fatalf("%s/%s: port %d mode %s is below the floor %s", p.Namespace, p.Name, pm.Port, pm.Mode, floor)
				}
				if pm.Mode == r.Mode {
					t.Fatalf("%s/%s: port %d listed with the pod's own mode", p.Namespace, p.Name, pm.Port)
				}
				effective[pm.Port] = pm.Mode
			}
			if r.Workload == "" {
				continue
			}
			for _, entry := range policies[p.Namespace+"/"+r.Workload].Ports {
				want := entry.Mode
				if Weaker(want, floor) {
					want = floor
				}
				got, listed := effective[entry.Port]
				if !listed {
					got = r.Mode
				}
				if got != want {
					t.Fatalf("%s/%s: port %d is %s, but the winning policy %s says %s (floor %s)", p.Namespace, p.Name, entry.Port, got, r.Workload, entry.Mode, floor)
				}
			}
		}
		checkAffected(t, w, ix, data)
	})
}
