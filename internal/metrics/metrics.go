// Package metrics holds the operator's Prometheus metrics, registered with
// controller-runtime's registry and served on the manager's metrics endpoint beside
// controller-runtime's own (controller_runtime_reconcile_total,
// controller_runtime_reconcile_errors_total, workqueue_*).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// PodsByMode is the number of meshed pods by effective inbound mode.
	PodsByMode = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshtls_pods",
		Help: "Meshed pods by effective inbound mTLS mode.",
	}, []string{"mode"})

	// ProxyConfigWrites counts API writes of PodProxyConfigs by operation.
	ProxyConfigWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshtls_podproxyconfig_writes_total",
		Help: "PodProxyConfig writes by operation (create, update, delete).",
	}, []string{"operation"})

	// StatusWrites counts status writes of policies by kind.
	StatusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshtls_policy_status_writes_total",
		Help: "Policy status writes by kind.",
	}, []string{"kind"})

	// StatusConflicts counts status writes that met a conflict and were retried.
	StatusConflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshtls_policy_status_conflicts_total",
		Help: "Policy status writes retried after a conflict, by kind.",
	}, []string{"kind"})

	// ForeignProxyConfigs is the number of meshed pods whose PodProxyConfig name is
	// held by an object the operator did not create (and leaves alone).
	ForeignProxyConfigs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshtls_foreign_podproxyconfigs",
		Help: "Meshed pods whose PodProxyConfig is held by an object meshtls-operator did not create; they run without their resolved configuration.",
	})

	// MeshedPodsWithoutSidecar is the number of meshed pods that carry no proxy.
	MeshedPodsWithoutSidecar = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshtls_pods_without_sidecar",
		Help: "Meshed pods without the meshtls-proxy sidecar (labelled meshed after they were created); recreate them.",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(PodsByMode, ProxyConfigWrites, StatusWrites, StatusConflicts, ForeignProxyConfigs, MeshedPodsWithoutSidecar)
}
