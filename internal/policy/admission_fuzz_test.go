package policy

import (
	"fmt"
	"testing"
)

// FuzzAdmitWorkloadPolicy drives the admission decision with arbitrary worlds and
// candidates, and checks what admission promises:
//   - an update that leaves the spec as it was is never refused, whatever state the
//     policy is in (conflicted, below the floor): nothing can get stuck;
//   - a create that is admitted adds no conflict: no meshed pod that was decided by
//     at most one workload policy is claimed by two afterwards;
//   - an admitted create stays admitted when replayed as an unchanged update.
func FuzzAdmitWorkloadPolicy(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, []byte{0, 1, 2})
	f.Add([]byte{200, 3, 1, 0, 2, 2, 1, 1, 0, 3, 2, 1}, []byte{1, 0, 0, 2, 1})
	f.Add([]byte{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, []byte{2, 2, 2, 2})
	f.Fuzz(func(t *testing.T, world, cand []byte) {
		w := randomWorld(world)
		if len(w.namespaces) == 0 {
			return
		}
		r := &byteReader{b: cand}
		ns := w.namespaces[r.next(len(w.namespaces))].Name
		values := []string{"a", "b", "c"}
		opts := []wlOpt{mode(fuzzModes[r.next(4)])}
		if r.next(2) == 0 {
			opts = append(opts, selecting("app", values[r.next(3)]))
		} else {
			opts = append(opts, targeting(fmt.Sprintf("svc%d", r.next(3))))
		}
		if r.next(2) == 0 {
			opts = append(opts, port(int32(8080+r.next(3)), fuzzModes[1+r.next(3)]))
		}
		candidate := workload(ns, "candidate", 9, opts...)

		ix := w.index()
		if a := ix.AdmitWorkloadPolicy(candidate, candidate, nil); len(a.Errors) > 0 {
			t.Fatalf("an unchanged update was refused: %v", a.Errors)
		}
		created := ix.AdmitWorkloadPolicy(candidate, nil, nil)
		if len(created.Errors) > 0 {
			return
		}
		before := map[string]int{}
		for _, p := range w.pods {
			if r, ok := ix.Resolve(p.Namespace, p.Name); ok {
				before[p.Namespace+"/"+p.Name] = 1 + len(r.Losers)
			}
		}
		ix.ApplyWorkloadPolicy(candidate)
		for _, p := range w.pods {
			r, ok := ix.Resolve(p.Namespace, p.Name)
			if !ok || (r.Workload != candidate.Name && !contains(r.Losers, candidate.Name)) {
				continue
			}
			if n := before[p.Namespace+"/"+p.Name]; n <= 1 && len(r.Losers) > 0 {
				t.Fatalf("admitted %s, which now conflicts on meshed pod %s/%s (winner %s, losers %v)", candidate.Name, p.Namespace, p.Name, r.Workload, r.Losers)
			}
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
