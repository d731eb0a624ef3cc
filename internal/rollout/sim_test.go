package rollout

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden simulation logs in testdata/")

// The simulation runs the controller's loop against a small model of the cluster,
// one tick of simulated time after another, and logs what the rollout decided and
// why. As Cluster API's rollout planner tests do, it compares the log with a golden
// file (go test ./internal/rollout -run TestSimulation -update rewrites them): a
// change of behaviour shows up as a readable diff.
//
// The model: each namespace has a NamespaceMTLSPolicy mode and pods. When the mode
// changes, the operator rewrites the pods' configuration on the next tick, and each
// pod's proxy applies it applyTicks later. Between ticks the status goes through JSON,
// as it does through the API server: the planner keeps nothing else, so every tick
// is also what an operator restarted right then would do.

const tick = 30 * time.Second

type simPod struct {
	name        string
	noSidecar   bool
	noCert      bool
	applyTicks  int
	configMode  v1alpha1.Mode // the namespace mode the pod's configuration follows
	appliedMode v1alpha1.Mode // the one its proxy enforces
	applyAt     time.Time
	plaintext   time.Time
	rejected    int64
}

type simNS struct {
	labels map[string]string
	mode   v1alpha1.Mode // "" = no NamespaceMTLSPolicy
	pods   []*simPod
}

type sim struct {
	t        *testing.T
	start    time.Time
	now      time.Time
	spec     v1alpha1.MTLSRolloutSpec
	status   v1alpha1.MTLSRolloutStatus
	mesh     Mesh
	ns       map[string]*simNS
	overlaps []string
	// dropActions makes the next step's actions get lost, as when the operator stops
	// right after writing the status.
	dropActions bool
	lost        []Action
	script      map[time.Duration]func(*sim)
	log         strings.Builder
	lastShown   string
}

func newSim(t *testing.T) *sim {
	start := time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)
	return &sim{
		t: t, start: start, now: start, ns: map[string]*simNS{}, script: map[time.Duration]func(*sim){},
		spec: v1alpha1.MTLSRolloutSpec{
			TargetMode: v1alpha1.ModeStrict, NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
			MaxConcurrent: 1, SoakDuration: &metav1.Duration{Duration: 2 * time.Minute},
			PlaintextWindow: &metav1.Duration{Duration: 3 * time.Minute}, RollbackOnFailure: ptr.To(true),
		},
	}
}

// namespace adds a namespace labelled team=shop with a policy mode ("" for none) and
// n pods, all ready for promotion.
func (s *sim) namespace(name string, mode v1alpha1.Mode, n int) *simNS {
	ns := &simNS{labels: map[string]string{"team": "shop"}, mode: mode}
	for i := range n {
		m := mode
		if m == "" {
			m = v1alpha1.ModeUnset
		}
		ns.pods = append(ns.pods, &simPod{name: fmt.Sprintf("%s-%d", name, i), applyTicks: 1, configMode: m, appliedMode: m})
	}
	s.ns[name] = ns
	return ns
}

func (s *sim) at(d time.Duration, f func(*sim)) { s.script[d] = f }

func (s *sim) pod(ns, name string) *simPod {
	for _, p := range s.ns[ns].pods {
		if p.name == name {
			return p
		}
	}
	s.t.Fatalf("no pod %s/%s", ns, name)
	return nil
}

func (s *sim) selected() []string {
	var out []string
	for name, ns := range s.ns {
		match := len(s.spec.NamespaceSelector.MatchLabels) > 0
		for k, v := range s.spec.NamespaceSelector.MatchLabels {
			match = match && ns.labels[k] == v
		}
		if match {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (s *sim) observe() Observation {
	obs := Observation{Generation: 1, Selected: s.selected(), Mesh: s.mesh, Overlaps: s.overlaps, Modes: map[string]v1alpha1.Mode{}, Pods: map[string][]Pod{}}
	for name, ns := range s.ns {
		if ns.mode != "" {
			obs.Modes[name] = ns.mode
		}
	}
	for _, name := range Needs(s.spec, s.status, obs, s.now) {
		pods := []Pod{}
		for _, sp := range s.ns[name].pods {
			p := Pod{Name: sp.name, Config: true, SidecarMissing: sp.noSidecar, NamespaceMode: sp.configMode,
				Applied: sp.appliedMode == sp.configMode, CertificateReady: !sp.noCert, LastPlaintext: sp.plaintext, RejectedPlaintext: sp.rejected,
				Created: s.start.Add(-time.Hour)} // running long before the rollout
			if sp.noCert {
				p.CertificateReason = "Issuing"
			}
			pods = append(pods, p)
		}
		obs.Pods[name] = pods
	}
	return obs
}

// world moves the model on by one tick: the operator rewrites configurations, the
// proxies apply them.
func (s *sim) world() {
	for _, ns := range s.ns {
		m := ns.mode
		if m == "" {
			m = v1alpha1.ModeUnset
		}
		for _, p := range ns.pods {
			if p.appliedMode != p.configMode && !p.applyAt.IsZero() && !s.now.Before(p.applyAt) && !p.noSidecar {
				p.appliedMode = p.configMode
			}
			if p.configMode != m {
				p.configMode = m
				p.applyAt = s.now.Add(time.Duration(p.applyTicks) * tick)
			}
		}
	}
}

func (s *sim) step() Result {
	r := Step(s.spec, s.status, s.observe(), s.now)
	// Through JSON, as through the API server.
	b, err := json.Marshal(r.Status)
	if err != nil {
		s.t.Fatal(err)
	}
	s.status = v1alpha1.MTLSRolloutStatus{}
	if err := json.Unmarshal(b, &s.status); err != nil {
		s.t.Fatal(err)
	}
	if s.dropActions {
		s.dropActions = false
		s.lost = r.Actions
		return r
	}
	for _, a := range r.Actions {
		s.ns[a.Namespace].mode = a.Mode
	}
	return r
}

func (s *sim) show(r Result) {
	var b strings.Builder
	for _, e := range s.status.Namespaces {
		fmt.Fprintf(&b, "    %-8s %-10s %-10s %s\n", e.Name, e.State, e.PreviousMode, e.Message)
	}
	table := b.String()
	if len(r.Notes) == 0 && len(r.Actions) == 0 && table == s.lastShown {
		return
	}
	defer func() {
		if len(s.lost) > 0 {
			fmt.Fprintf(&s.log, "  !! the operator stops before it acts: lost %v\n", s.lost)
			s.lost = nil
		}
	}()
	s.lastShown = table
	fmt.Fprintf(&s.log, "t+%s phase=%s\n", s.now.Sub(s.start), s.status.Phase)
	for _, n := range r.Notes {
		fmt.Fprintf(&s.log, "  note: %s\n", n)
	}
	for _, a := range r.Actions {
		fmt.Fprintf(&s.log, "  action: %s\n", a)
	}
	if !r.RequeueAt.IsZero() {
		fmt.Fprintf(&s.log, "  requeue: t+%s\n", r.RequeueAt.Sub(s.start))
	}
	s.log.WriteString(table)
}

// run steps until the rollout finishes or limit passes, and returns the log.
func (s *sim) run(limit time.Duration) string {
	for ; s.now.Sub(s.start) <= limit; s.now = s.now.Add(tick) {
		if f := s.script[s.now.Sub(s.start)]; f != nil {
			f(s)
		}
		s.world()
		r := s.step()
		s.show(r)
		if Finished(s.status.Phase) {
			break
		}
	}
	for _, c := range s.status.Conditions {
		fmt.Fprintf(&s.log, "condition %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	return s.log.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/rollout -run TestSimulation -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("the simulation log differs from %s (run with -update and review the diff):\n%s", path, got)
	}
}

// fileName turns a test's sentence into a file name.
func fileName(sentence string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, sentence)
}

func TestSimulation(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *sim)
		// want is the phase the rollout must end in (the golden log says how).
		want v1alpha1.RolloutPhase
	}{
		{"promotes three namespaces one at a time, each when ready", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 2)
			s.pod("shop-a", "shop-a-1").plaintext = s.start.Add(-time.Minute) // a client still spoke plaintext a minute ago
			s.namespace("shop-b", "", 1)
			c := s.namespace("shop-c", v1alpha1.ModePermissive, 3)
			c.pods[0].appliedMode, c.pods[0].applyAt = v1alpha1.ModeStrict, s.start.Add(13*tick) // has not applied its config yet
			c.pods[2].noCert = true
			s.at(7*time.Minute, func(s *sim) { s.pod("shop-c", "shop-c-2").noCert = false })
		}, v1alpha1.RolloutSucceeded},

		{"rolls a namespace back when rejectedPlaintext rises during its soak, and stops", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 1)
			s.namespace("shop-b", v1alpha1.ModePermissive, 2)
			s.namespace("shop-c", v1alpha1.ModePermissive, 1)
			s.pod("shop-b", "shop-b-1").rejected = 4 // rejected on a STRICT port before: the baseline
			s.at(5*time.Minute, func(s *sim) { s.pod("shop-b", "shop-b-1").rejected = 7 })
		}, v1alpha1.RolloutRolledBack},

		{"fails without rolling back when rollbackOnFailure is false", func(s *sim) {
			s.spec.RollbackOnFailure = ptr.To(false)
			s.namespace("shop-a", v1alpha1.ModePermissive, 1)
			s.at(90*time.Second, func(s *sim) { s.pod("shop-a", "shop-a-0").rejected = 1 })
		}, v1alpha1.RolloutFailed},

		{"pauses after the current step and resumes; namespaces join and leave mid-way", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 1)
			s.namespace("shop-b", v1alpha1.ModePermissive, 1)
			s.namespace("shop-c", v1alpha1.ModePermissive, 1)
			s.at(30*time.Second, func(s *sim) { s.spec.Paused = true })
			s.at(4*time.Minute, func(s *sim) { s.spec.Paused = false })
			s.at(5*time.Minute, func(s *sim) {
				s.namespace("shop-d", v1alpha1.ModeDisable, 1)
				delete(s.ns["shop-c"].labels, "team")
			})
			s.at(6*time.Minute, func(s *sim) { delete(s.ns["shop-b"].labels, "team") }) // while in flight
		}, v1alpha1.RolloutSucceeded},

		{"repeats an action lost when the operator stopped between recording and acting", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 1)
			s.dropActions = true                                                                                 // the promotion is lost
			s.at(2*time.Minute, func(s *sim) { s.pod("shop-a", "shop-a-0").rejected = 2; s.dropActions = true }) // and the rollback
		}, v1alpha1.RolloutRolledBack},

		{"skips namespaces already STRICT and promotes two at a time", func(s *sim) {
			s.spec.MaxConcurrent = 2
			s.mesh = Mesh{Mode: v1alpha1.ModePermissive}
			s.namespace("shop-a", v1alpha1.ModeStrict, 1)
			s.namespace("shop-b", v1alpha1.ModePermissive, 1)
			s.namespace("shop-c", "", 1)
			s.namespace("shop-d", v1alpha1.ModeUnset, 2)
		}, v1alpha1.RolloutSucceeded},

		{"succeeds at once when every namespace is already STRICT", func(s *sim) {
			s.mesh = Mesh{Mode: v1alpha1.ModeStrict, MinimumMode: v1alpha1.ModePermissive}
			s.namespace("shop-a", "", 1)
			s.namespace("shop-b", v1alpha1.ModeStrict, 0)
		}, v1alpha1.RolloutSucceeded},

		{"waits while nothing is selected, and starts when a namespace is labelled", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 1).labels = map[string]string{}
			s.at(time.Minute, func(s *sim) { s.ns["shop-a"].labels["team"] = "shop" })
		}, v1alpha1.RolloutSucceeded},

		{"stalls on a pod without a sidecar until it is recreated", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 2)
			s.pod("shop-a", "shop-a-1").noSidecar = true
			s.at(2*time.Minute, func(s *sim) { s.pod("shop-a", "shop-a-1").noSidecar = false })
		}, v1alpha1.RolloutSucceeded},

		{"waits for an older overlapping rollout to finish", func(s *sim) {
			s.namespace("shop-a", v1alpha1.ModePermissive, 1)
			s.overlaps = []string{"older"}
			s.at(time.Minute, func(s *sim) { s.overlaps = nil })
		}, v1alpha1.RolloutSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t)
			tt.setup(s)
			log := s.run(30 * time.Minute)
			golden(t, fileName(tt.name), log)
			if s.status.Phase != tt.want {
				t.Errorf("the rollout ended %s, want %s", s.status.Phase, tt.want)
			}
		})
	}
}
