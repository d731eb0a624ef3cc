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
)

func init() {
	ctrlmetrics.Registry.MustRegister(PodsByMode, ProxyConfigWrites, StatusWrites)
}
