package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// CertificateEarliestExpiry is, per meshed namespace, the earliest notAfter of the
	// workload certificates cert-manager reports Ready there: alert when it comes
	// closer than the renewBefore of the mesh (renewal is failing).
	CertificateEarliestExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshtls_certificate_earliest_expiry_timestamp_seconds",
		Help: "Earliest notAfter (Unix seconds) of the Ready workload certificates of a namespace.",
	}, []string{"namespace"})

	// Certificates counts the workload Certificates the mesh needs, by health: ready,
	// failing (not Ready, or held by an object the operator did not create), expiring
	// (Ready but past the time cert-manager should have renewed it).
	Certificates = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshtls_certificates",
		Help: "Workload certificates the mesh needs, by state (ready, failing, expiring).",
	}, []string{"state"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(CertificateEarliestExpiry, Certificates)
}
