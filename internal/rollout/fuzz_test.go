package rollout

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// FuzzStep drives the state machine through a world that the fuzzer changes at
// random between steps (selection, modes, pods and their reports, pause, lost
// actions) and checks what must hold whatever happens. `go test` runs the seeds;
// `go test -fuzz FuzzStep ./internal/rollout` hunts.
func FuzzStep(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte("promote, soak, reject, roll back, pause, remove, restart"))
	f.Add([]byte{255, 0, 255, 0, 17, 34, 51, 68, 85, 102, 119, 136, 153, 170, 187, 204, 221, 238})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 512 {
			return
		}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		names := []string{"a", "b", "c", "d"}
		spec := baseSpec()
		spec.MaxConcurrent = int32(next()%3) + 1
		spec.RollbackOnFailure = ptr.To(next()%2 == 0)
		modes := []v1alpha1.Mode{"", v1alpha1.ModeUnset, v1alpha1.ModePermissive, v1alpha1.ModeStrict, v1alpha1.ModeDisable}
		w := struct {
			selected map[string]bool
			mode     map[string]v1alpha1.Mode
			pods     map[string][]Pod
			mesh     Mesh
		}{map[string]bool{}, map[string]v1alpha1.Mode{}, map[string][]Pod{}, Mesh{}}
		for _, n := range names {
			w.selected[n] = next()%4 != 0
			w.mode[n] = modes[int(next())%len(modes)]
			for i := range int(next() % 3) {
				w.pods[n] = append(w.pods[n], pod(fmt.Sprintf("%s-%d", n, i), follows(w.mode[n])))
			}
		}
		var status v1alpha1.MTLSRolloutStatus
		now := t0
		for step := 0; step < 40 && len(data) > 0; step++ {
			// The world changes.
			switch op := next() % 12; op {
			case 0:
				n := names[int(next())%len(names)]
				w.selected[n] = !w.selected[n]
			case 1:
				spec.Paused = !spec.Paused
			case 2:
				n := names[int(next())%len(names)]
				if ps := w.pods[n]; len(ps) > 0 {
					ps[int(next())%len(ps)].RejectedPlaintext += int64(next() % 3)
				}
			case 3:
				n := names[int(next())%len(names)]
				if ps := w.pods[n]; len(ps) > 0 {
					ps[int(next())%len(ps)].LastPlaintext = now
				}
			case 4:
				n := names[int(next())%len(names)]
				if ps := w.pods[n]; len(ps) > 0 {
					p := &ps[int(next())%len(ps)]
					p.Applied, p.CertificateReady, p.SidecarMissing = next()%2 == 0, next()%2 == 0, next()%5 == 0
				}
			case 5:
				w.mesh = Mesh{Mode: modes[int(next())%len(modes)], MinimumMode: modes[int(next())%len(modes)]}
			case 6:
				n := names[int(next())%len(names)]
				w.mode[n] = modes[int(next())%len(modes)]
			}
			now = now.Add(time.Duration(next()) * time.Second)

			obs := Observation{Generation: int64(step), Mesh: w.mesh, Modes: map[string]v1alpha1.Mode{}, Pods: map[string][]Pod{}}
			for _, n := range names {
				if w.selected[n] {
					obs.Selected = append(obs.Selected, n)
				}
				if w.mode[n] != "" {
					obs.Modes[n] = w.mode[n]
				}
			}
			for _, n := range Needs(spec, status, obs, now) {
				obs.Pods[n] = append([]Pod{}, w.pods[n]...)
			}
			r := Step(spec, status, obs, now)
			checkInvariants(t, spec, status, obs, r)

			// The operator acts, unless it "stops" before it does; the proxies follow.
			if next()%5 != 0 {
				for _, a := range r.Actions {
					w.mode[a.Namespace] = a.Mode
					for i := range w.pods[a.Namespace] {
						w.pods[a.Namespace][i].NamespaceMode = a.Mode
					}
				}
			}
			b, err := json.Marshal(r.Status)
			if err != nil {
				t.Fatal(err)
			}
			status = v1alpha1.MTLSRolloutStatus{}
			if err := json.Unmarshal(b, &status); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// checkInvariants asserts what must hold after any step.
func checkInvariants(t *testing.T, spec v1alpha1.MTLSRolloutSpec, before v1alpha1.MTLSRolloutStatus, obs Observation, r Result) {
	t.Helper()
	s := r.Status
	if Finished(before.Phase) {
		if s.Phase != before.Phase || len(r.Actions) > 0 {
			t.Fatalf("a finished rollout moved: %s -> %s, actions %v", before.Phase, s.Phase, r.Actions)
		}
	}
	selected := map[string]bool{}
	for _, n := range obs.Selected {
		selected[n] = true
	}
	flying := 0
	state := map[string]v1alpha1.NamespaceRolloutStatus{}
	for _, e := range s.Namespaces {
		state[e.Name] = e
		if inFlight(e.State) {
			if !selected[e.Name] {
				t.Fatalf("%s is %s but not selected", e.Name, e.State)
			}
			flying++
		}
		if len(e.Message) > 1024 {
			t.Fatalf("message of %s is %d bytes", e.Name, len(e.Message))
		}
		if (e.State == v1alpha1.NamespacePromoted || e.State == v1alpha1.NamespaceSoaking || e.State == v1alpha1.NamespaceSucceeded ||
			e.State == v1alpha1.NamespaceRolledBack || e.State == v1alpha1.NamespaceFailed) && e.PreviousMode == "" {
			t.Fatalf("%s is %s without a previous mode", e.Name, e.State)
		}
	}
	if flying > int(spec.MaxConcurrent) {
		t.Fatalf("%d namespaces in flight, maxConcurrent %d", flying, spec.MaxConcurrent)
	}
	for _, a := range r.Actions {
		e := state[a.Namespace]
		switch a.Type {
		case Promote:
			if !inFlight(e.State) || a.Mode != v1alpha1.ModeStrict {
				t.Fatalf("%v while %s is %s", a, a.Namespace, e.State)
			}
		case Rollback:
			if e.State != v1alpha1.NamespaceRolledBack || a.Mode != e.PreviousMode {
				t.Fatalf("%v while %s is %s (previous %s)", a, a.Namespace, e.State, e.PreviousMode)
			}
		}
	}
	ready := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
	if ready == nil || (ready.Status == metav1.ConditionTrue) != (s.Phase == v1alpha1.RolloutSucceeded) {
		t.Fatalf("Ready %+v in phase %s", ready, s.Phase)
	}
	if s.Phase == v1alpha1.RolloutSucceeded {
		for _, e := range s.Namespaces {
			if e.State != v1alpha1.NamespaceSucceeded && e.State != v1alpha1.NamespaceSkipped && e.State != v1alpha1.NamespaceRemoved {
				t.Fatalf("Succeeded with %s %s", e.Name, e.State)
			}
		}
	}
}
