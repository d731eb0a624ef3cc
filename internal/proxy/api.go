package proxy

import (
	"encoding/json"
	"time"
)

// The slice of the PodProxyConfig API (api/v1alpha1) that the proxy reads and
// writes, as plain JSON structs. The sidecar does not link the API machinery
// (k8s.io/apimachinery, client-go): it reads one object and writes its status, and
// every MiB of a sidecar is paid once per pod. The JSON names and enum values are
// the API's; api_test.go proves these structs round-trip through the real types.

// Mode is an inbound mTLS mode, spelled as in the API (and as Istio spells it).
type Mode string

// The modes a PodProxyConfig can set.
const (
	ModeStrict     Mode = "STRICT"
	ModePermissive Mode = "PERMISSIVE"
	ModeDisable    Mode = "DISABLE"
)

// Condition types and statuses the proxy writes.
const (
	ConditionApplied          = "Applied"
	ConditionCertificateReady = "CertificateReady"
	ConditionTrue             = "True"
	ConditionFalse            = "False"
)

// PodProxyConfig is security.meshtls.io/v1alpha1 PodProxyConfig, the fields the
// proxy uses.
type PodProxyConfig struct {
	APIVersion string               `json:"apiVersion,omitempty"`
	Kind       string               `json:"kind,omitempty"`
	Metadata   ObjectMeta           `json:"metadata"`
	Spec       PodProxyConfigSpec   `json:"spec"`
	Status     PodProxyConfigStatus `json:"status,omitempty"`
}

// ObjectMeta is the part of metadata the proxy uses.
type ObjectMeta struct {
	Name            string `json:"name,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Generation      int64  `json:"generation,omitempty"`
}

// PodProxyConfigSpec is the part of the spec the proxy enforces. (sidecar and
// certificate are the operator's observations and not covered by configHash; the
// proxy ignores them, and inbound.uncapturedPorts, which it cannot see anyway.)
type PodProxyConfigSpec struct {
	PodUID                string        `json:"podUID"`
	Identity              string        `json:"identity,omitempty"`
	CertificateSecretName string        `json:"certificateSecretName,omitempty"`
	Inbound               InboundConfig `json:"inbound"`
	ConfigHash            string        `json:"configHash,omitempty"`
}

// InboundConfig is spec.inbound.
type InboundConfig struct {
	Mode  Mode       `json:"mode"`
	Ports []PortMTLS `json:"ports,omitempty"`
}

// PortMTLS is one entry of spec.inbound.ports.
type PortMTLS struct {
	Port int32 `json:"port"`
	Mode Mode  `json:"mode"`
}

// PodProxyConfigStatus is the status the proxy writes.
type PodProxyConfigStatus struct {
	AppliedHash       string            `json:"appliedHash,omitempty"`
	Conditions        []Condition       `json:"conditions,omitempty"`
	Connections       *ConnectionCounts `json:"connections,omitempty"`
	LastPlaintextTime *Time             `json:"lastPlaintextTime,omitempty"`
}

// Condition is a metav1.Condition.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	LastTransitionTime Time   `json:"lastTransitionTime"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
}

// ConnectionCounts are status.connections.
type ConnectionCounts struct {
	MTLS              int64 `json:"mtls"`
	Plaintext         int64 `json:"plaintext"`
	RejectedPlaintext int64 `json:"rejectedPlaintext"`
	HandshakeFailures int64 `json:"handshakeFailures"`
}

// Time is a metav1.Time: RFC 3339 in UTC, to the second.
type Time struct{ time.Time }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	pt, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	t.Time = pt.Local()
	return nil
}

// FindCondition returns the condition of type t, or nil.
func FindCondition(conds []Condition, t string) *Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// SetCondition sets c in conds, keeping the existing LastTransitionTime when the
// status did not change (metav1 semantics).
func SetCondition(conds *[]Condition, c Condition) {
	if old := FindCondition(*conds, c.Type); old != nil {
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		*old = c
		return
	}
	*conds = append(*conds, c)
}
