package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DecisionScope is the level of a policy that took part in a decision.
// +kubebuilder:validation:Enum=Workload;Namespace;Mesh;MinimumMode
type DecisionScope string

const (
	// ScopeWorkload is a WorkloadMTLSPolicy.
	ScopeWorkload DecisionScope = "Workload"
	// ScopeNamespace is the namespace's NamespaceMTLSPolicy.
	ScopeNamespace DecisionScope = "Namespace"
	// ScopeMesh is the MeshMTLSPolicy, or the built-in PERMISSIVE default without one.
	ScopeMesh DecisionScope = "Mesh"
	// ScopeMinimumMode is the mesh floor raising a weaker result.
	ScopeMinimumMode DecisionScope = "MinimumMode"
)

// InboundConfig is the effective inbound mTLS configuration of a pod.
type InboundConfig struct {
	// mode is the effective mode of every port not listed in ports.
	// +required
	// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode"`

	// ports lists the ports whose effective mode differs from mode, sorted by port.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=64
	Ports []PortMTLS `json:"ports,omitempty"`

	// uncapturedPorts are ports excluded from capture by the pod's
	// meshtls.io/exclude-inbound-ports annotation although their effective mode is
	// not DISABLE: connections to them reach the application without the proxy, in
	// plaintext. Shown here so the bypass is visible; the proxy cannot enforce them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	UncapturedPorts []int32 `json:"uncapturedPorts,omitempty"`
}

// Decision is one level of policy that applied to a pod: the explanation of the
// effective configuration.
type Decision struct {
	// scope is the level: Workload, Namespace, Mesh or MinimumMode.
	// +required
	Scope DecisionScope `json:"scope"`

	// kind of the policy object, e.g. WorkloadMTLSPolicy; empty for the built-in mesh
	// default.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind,omitempty"`

	// name of the policy object; empty for the built-in mesh default.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`

	// mode the policy asked for at this level (UNSET when it asked for none).
	// +optional
	// +kubebuilder:validation:Enum=UNSET;STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode,omitempty"`

	// ports this level decided through port-level entries.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Ports []int32 `json:"ports,omitempty"`
}

// PodProxyConfigSpec is the resolved proxy configuration of one pod. It is written
// only by the operator.
type PodProxyConfigSpec struct {
	// podUID is the UID of the pod this configuration is for.
	// +required
	PodUID types.UID `json:"podUID"`

	// serviceAccountName the pod runs as.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// identity is the pod's SPIFFE ID: spiffe://<trustDomain>/ns/<namespace>/sa/<sa>.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Identity string `json:"identity,omitempty"`

	// certificateSecretName is the Secret holding the pod's certificate and key;
	// empty while the mesh has no issuer.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	CertificateSecretName string `json:"certificateSecretName,omitempty"`

	// trustBundleConfigMapName is the ConfigMap holding the trust anchors (key ca.crt).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	TrustBundleConfigMapName string `json:"trustBundleConfigMapName,omitempty"`

	// inbound is the effective inbound mTLS configuration.
	// +required
	Inbound InboundConfig `json:"inbound"`

	// decision says why: one entry per level of policy that applied, narrowest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Decision []Decision `json:"decision,omitempty"`

	// configHash is a sha256 over everything above; the proxy reports it back in
	// status.appliedHash once it enforces this configuration.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	ConfigHash string `json:"configHash,omitempty"`

	// sidecar says whether the pod carries the meshtls-proxy sidecar. Missing means
	// the pod became meshed after it was created (a label change): nothing enforces
	// this configuration until the pod is recreated, and an MTLSRollout will not
	// promote its namespace. Not covered by configHash (it is an observation, not
	// configuration).
	// +optional
	Sidecar SidecarState `json:"sidecar,omitempty"`

	// certificate is the operator's view of the pod's workload certificate: the
	// cert-manager Certificate and whether cert-manager reports it Ready. (The
	// proxy's own view is its CertificateReady condition.) Absent when the mesh has
	// no issuer. Not covered by configHash.
	// +optional
	Certificate *CertificateState `json:"certificate,omitempty"`
}

// SidecarState says whether a meshed pod carries the proxy.
// +kubebuilder:validation:Enum=Injected;Missing
type SidecarState string

const (
	// SidecarInjected: the pod carries the meshtls-proxy sidecar.
	SidecarInjected SidecarState = "Injected"
	// SidecarMissing: the pod is meshed but has no sidecar (labelled after it was
	// created); recreate it to get one.
	SidecarMissing SidecarState = "Missing"
)

// CertificateState is the state of a pod's workload certificate as cert-manager
// reports it.
type CertificateState struct {
	// name is the cert-manager Certificate in the pod's namespace.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// ready is true when the Certificate exists, is the operator's, and cert-manager
	// reports it Ready.
	// +optional
	Ready bool `json:"ready"`

	// reason is cert-manager's reason for the Ready condition, or one of the
	// operator's: Pending (not created yet), NotOwned (a Certificate of this name
	// that the operator did not create; it is left alone).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason,omitempty"`

	// message explains reason.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// ConnectionCounts are a proxy's inbound connection counters since it started.
type ConnectionCounts struct {
	// mtls is the number of accepted mutual-TLS connections.
	// +optional
	MTLS int64 `json:"mtls"`
	// plaintext is the number of accepted plaintext connections.
	// +optional
	Plaintext int64 `json:"plaintext"`
	// rejectedPlaintext is the number of plaintext connections refused on STRICT ports.
	// +optional
	RejectedPlaintext int64 `json:"rejectedPlaintext"`
	// handshakeFailures is the number of failed TLS handshakes.
	// +optional
	HandshakeFailures int64 `json:"handshakeFailures"`
}

// PodProxyConfigStatus is written only by the pod's own proxy.
type PodProxyConfigStatus struct {
	// appliedHash is the spec.configHash the proxy enforces.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	AppliedHash string `json:"appliedHash,omitempty"`

	// conditions: Applied and CertificateReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// connections are the proxy's inbound counters, written at most once a minute
	// while they change.
	// +optional
	Connections *ConnectionCounts `json:"connections,omitempty"`

	// lastPlaintextTime is when the proxy last accepted a plaintext connection.
	// +optional
	LastPlaintextTime *metav1.Time `json:"lastPlaintextTime,omitempty"`
}

// PodProxyConfig is the effective mTLS configuration of one meshed pod, written by
// the operator: same name as the pod, owned by it. Its spec says what the pod's proxy
// enforces and why; its status is what that proxy reports.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=ppc,categories=meshtls
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.inbound.mode`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.spec.inbound.ports[*].port`
// +kubebuilder:printcolumn:name="Identity",type=string,JSONPath=`.spec.identity`
// +kubebuilder:printcolumn:name="Sidecar",type=string,JSONPath=`.spec.sidecar`,priority=1
// +kubebuilder:printcolumn:name="Cert",type=boolean,JSONPath=`.spec.certificate.ready`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="Applied")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PodProxyConfig struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is written by the operator.
	// +required
	Spec PodProxyConfigSpec `json:"spec"`

	// status is written by the pod's proxy.
	// +optional
	Status PodProxyConfigStatus `json:"status,omitempty"`
}

// PodProxyConfigList is a list of PodProxyConfig.
// +kubebuilder:object:root=true
type PodProxyConfigList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PodProxyConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PodProxyConfig{}, &PodProxyConfigList{})
}
