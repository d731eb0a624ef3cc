package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// MTLSRollout metrics.
var (
	// RolloutNamespaces is the number of namespaces of each rollout by state.
	RolloutNamespaces = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshtls_rollout_namespaces",
		Help: "Namespaces of each MTLSRollout by state (Pending, Waiting, Promoted, Soaking, Succeeded, RolledBack, Failed, Skipped, Removed).",
	}, []string{"rollout", "state"})

	// RolloutPhase is 1 for the current phase of each rollout, 0 for the others.
	RolloutPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshtls_rollout_phase",
		Help: "1 for the current phase of each MTLSRollout; alert on phase=\"RolledBack\" or \"Failed\".",
	}, []string{"rollout", "phase"})

	// RolloutTransitions counts the transitions of rollouts and of their namespaces.
	RolloutTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshtls_rollout_transitions_total",
		Help: "Transitions of MTLSRollouts (kind=rollout, to=phase) and of their namespaces (kind=namespace, to=state).",
	}, []string{"kind", "to"})

	// RolloutWrites counts the rollout's writes of NamespaceMTLSPolicy spec.mode.
	RolloutWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshtls_rollout_policy_writes_total",
		Help: "Server-side applies of NamespaceMTLSPolicy spec.mode by MTLSRollouts, by action (Promote, Rollback) and result (ok, error).",
	}, []string{"action", "result"})
)

var (
	rolloutPhases = []string{"Pending", "Progressing", "Paused", "Succeeded", "RolledBack", "Failed"}
	rolloutStates = []string{"Pending", "Waiting", "Promoted", "Soaking", "Succeeded", "RolledBack", "Failed", "Skipped", "Removed"}
)

// ObserveRollout sets the gauges of one rollout.
func ObserveRollout(name, phase string, states map[string]int) {
	for _, p := range rolloutPhases {
		v := 0.0
		if p == phase {
			v = 1
		}
		RolloutPhase.WithLabelValues(name, p).Set(v)
	}
	for _, s := range rolloutStates {
		RolloutNamespaces.WithLabelValues(name, s).Set(float64(states[s]))
	}
}

// ForgetRollout drops the gauges of a deleted rollout.
func ForgetRollout(name string) {
	RolloutPhase.DeletePartialMatch(prometheus.Labels{"rollout": name})
	RolloutNamespaces.DeletePartialMatch(prometheus.Labels{"rollout": name})
}

func init() {
	ctrlmetrics.Registry.MustRegister(RolloutNamespaces, RolloutPhase, RolloutTransitions, RolloutWrites)
}
