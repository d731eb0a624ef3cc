package rollout

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Observation is the world as the controller saw it for one step. It holds plain
// values only; the controller gathers them (see PodFrom) and Step never reads
// anything else.
type Observation struct {
	// Generation is the rollout's metadata.generation.
	Generation int64
	// Selected are the existing namespaces that spec.namespaceSelector selects.
	Selected []string
	// SelectorError says why spec.namespaceSelector cannot be used; Selected is then
	// ignored.
	SelectorError string
	// Overlaps are the older unfinished rollouts that select some of the same
	// namespaces (the webhook refuses such rollouts; this holds when it was down).
	Overlaps []string
	// Mesh is the MeshMTLSPolicy, for the mode a namespace inherits.
	Mesh Mesh
	// Modes is spec.mode of each namespace's NamespaceMTLSPolicy "default"; a
	// namespace without one is absent (it inherits: UNSET).
	Modes map[string]v1alpha1.Mode
	// Pods are the meshed pods of the namespaces that Needs named. A namespace absent
	// here was not observed; an observed namespace without meshed pods maps to an
	// empty (non-nil) slice.
	Pods map[string][]Pod
	// ReportLag is how late a proxy may report (its report interval, one minute);
	// DefaultReportLag when zero.
	ReportLag time.Duration
	// Marks are the promotion annotations found on NamespaceMTLSPolicies.
	Marks map[string]Mark
	// ModeWriters names, per namespace, the field manager that owns spec.mode of its
	// NamespaceMTLSPolicy when that is not the rollout ("" or absent: unknown).
	ModeWriters map[string]string
}

// DefaultReportLag is the proxy's report interval for counters and lastPlaintextTime.
const DefaultReportLag = time.Minute

// Mark is what a rollout wrote on a NamespaceMTLSPolicy it promoted and that has not
// soaked yet (the meshtls.io/promoted-* annotations).
type Mark struct {
	By           string
	At           time.Time
	PreviousMode v1alpha1.Mode
}

// Mesh is what the rollout needs of the MeshMTLSPolicy "default". The zero value is
// no mesh policy: PERMISSIVE, no floor.
type Mesh struct {
	Mode        v1alpha1.Mode
	MinimumMode v1alpha1.Mode
}

// Pod is what the rollout needs of one meshed pod, read from its PodProxyConfig.
type Pod struct {
	Name string
	// Config is false while the pod has no PodProxyConfig (or only one left by an
	// older pod of the same name).
	Config bool
	// SidecarMissing: the pod carries no proxy (it was meshed by a label after it
	// was created); it cannot speak mTLS.
	SidecarMissing bool
	// Applied: the proxy reports the configuration it was given as applied
	// (status.appliedHash == spec.configHash).
	Applied bool
	// WorkloadDecides: a WorkloadMTLSPolicy's mode decides the pod's mode, so the
	// namespace's mode does not change its configuration.
	WorkloadDecides bool
	// NamespaceMode is the namespace policy mode the configuration was resolved with
	// (UNSET when the namespace level did not decide).
	NamespaceMode v1alpha1.Mode
	// CertificateReady: the pod's proxy holds a ready certificate; CertificateReason
	// says why not.
	CertificateReady  bool
	CertificateReason string
	// LastPlaintext is when the proxy last accepted a plaintext connection (zero:
	// never); LastPlaintextFrom is the peer, when the proxy reports it.
	LastPlaintext     time.Time
	LastPlaintextFrom string
	// RejectedPlaintext is the proxy's counter of plaintext connections refused on
	// STRICT ports since it started.
	RejectedPlaintext int64
	// Created is when the PodProxyConfig was created: the proxy cannot have seen
	// anything before. Zero: unknown, so never counted as watched (fail closed).
	Created time.Time
	// ReportedAt is the proxy's latest status write (zero: none).
	ReportedAt time.Time
	// WorkloadMode and WorkloadPolicy: the mode a WorkloadMTLSPolicy sets for the pod,
	// and that policy's name, when WorkloadDecides.
	WorkloadMode   v1alpha1.Mode
	WorkloadPolicy string
}

// watchedUntil is when the pod has been watched for a whole plaintext window: window
// after its creation, once its proxy has reported after that, or lag later at most.
func (p *Pod) watchedUntil(window, lag time.Duration) time.Time {
	end := p.Created.Add(window)
	if !p.ReportedAt.Before(end) {
		return end
	}
	return end.Add(lag)
}

// follows reports whether the pod's configuration reflects the namespace mode m:
// either the namespace level decided it with m, or a workload policy decides the pod
// and the namespace mode does not matter to it.
func (p *Pod) follows(m v1alpha1.Mode) bool {
	return p.Config && (p.WorkloadDecides || p.NamespaceMode == m)
}

// PodFrom reads what the rollout needs of the meshed pod name (UID uid) from its
// PodProxyConfig, which must be read with its status (the manager's cache drops it).
// ppc may be nil: the pod has no PodProxyConfig yet.
//
// The certificate counts as ready only when the operator reports it Ready where it
// reports one (spec.certificate) and the proxy itself reports CertificateReady=True:
// a STRICT port refuses every connection until the proxy holds a certificate.
func PodFrom(name string, uid types.UID, ppc *v1alpha1.PodProxyConfig) Pod {
	p := Pod{Name: name, NamespaceMode: v1alpha1.ModeUnset}
	if ppc == nil || (uid != "" && ppc.Spec.PodUID != uid) {
		return p
	}
	p.Config = true
	p.Created = ppc.CreationTimestamp.Time
	// The proxy is the only writer of the status (the guard sees to it): the latest
	// status entry of managedFields is its latest report that changed something.
	for _, f := range ppc.ManagedFields {
		if f.Subresource == "status" && f.Time != nil && f.Time.After(p.ReportedAt) {
			p.ReportedAt = f.Time.Time
		}
	}
	p.SidecarMissing = ppc.Spec.Sidecar == v1alpha1.SidecarMissing
	p.Applied = ppc.Status.AppliedHash != "" && ppc.Status.AppliedHash == ppc.Spec.ConfigHash
	for _, d := range ppc.Spec.Decision {
		switch d.Scope {
		case v1alpha1.ScopeWorkload:
			if d.Mode != "" && d.Mode != v1alpha1.ModeUnset {
				p.WorkloadDecides = true
				p.WorkloadMode, p.WorkloadPolicy = d.Mode, d.Name
			}
		case v1alpha1.ScopeNamespace:
			p.NamespaceMode = d.Mode
		}
	}

	p.CertificateReady = true
	if c := ppc.Spec.Certificate; c != nil && !c.Ready {
		p.CertificateReady, p.CertificateReason = false, "Certificate "+c.Name+" not Ready"
		if c.Reason != "" {
			p.CertificateReason += ": " + c.Reason
		}
	}
	if cond := meta.FindStatusCondition(ppc.Status.Conditions, v1alpha1.ConditionCertificateReady); cond == nil || cond.Status != metav1.ConditionTrue {
		if p.CertificateReady {
			p.CertificateReady = false
			switch {
			case ppc.Spec.CertificateSecretName == "":
				p.CertificateReason = "the mesh has no issuer"
			case cond == nil:
				p.CertificateReason = "the proxy reports no certificate"
			default:
				p.CertificateReason = "proxy: " + cond.Reason
			}
		}
	}

	if t := ppc.Status.LastPlaintextTime; t != nil {
		p.LastPlaintext = t.Time
	}
	if c := ppc.Status.Connections; c != nil {
		p.RejectedPlaintext = c.RejectedPlaintext
	}
	return p
}
