package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshMTLSPolicyName is the only name a MeshMTLSPolicy may have.
const MeshMTLSPolicyName = "default"

// MeshMTLSPolicySpec is the mesh-wide mTLS policy.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || !has(self.minimumMode) || !(self.minimumMode == 'STRICT' && self.mode != 'STRICT') && !(self.minimumMode == 'PERMISSIVE' && self.mode == 'DISABLE')",messageExpression="'spec.mode ' + self.mode + ' is weaker than spec.minimumMode ' + self.minimumMode + ': raise spec.mode or lower spec.minimumMode'",fieldPath=".mode",reason=FieldValueInvalid
type MeshMTLSPolicySpec struct {
	// mode is the mTLS mode of every meshed pod that no namespace or workload policy
	// decides for: STRICT, PERMISSIVE or DISABLE. Defaults to PERMISSIVE.
	// +optional
	// +kubebuilder:default=PERMISSIVE
	// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode,omitempty"`

	// minimumMode is the floor of the mesh: no namespace or workload policy may ask
	// for a weaker mode (DISABLE < PERMISSIVE < STRICT), and policies already below
	// it when it is raised are raised to it. Defaults to DISABLE (no floor).
	// +optional
	// +kubebuilder:default=DISABLE
	// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
	MinimumMode Mode `json:"minimumMode,omitempty"`

	// trustDomain is the SPIFFE trust domain of workload identities
	// (spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>): lower-case letters,
	// digits, '.', '-' and '_'. Defaults to cluster.local.
	// +optional
	// +kubebuilder:default="cluster.local"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9._-]+$')",message="trustDomain may hold only lower-case letters, digits, '.', '-' and '_' (SPIFFE trust-domain syntax), e.g. cluster.local"
	TrustDomain string `json:"trustDomain,omitempty"`

	// issuerRef is the cert-manager issuer that signs workload certificates.
	// +required
	IssuerRef IssuerReference `json:"issuerRef"`

	// certificate shapes the workload certificates.
	// +optional
	// +kubebuilder:default={}
	Certificate CertificateSettings `json:"certificate,omitempty"`

	// trustBundle adds trust anchors to the bundle every proxy trusts, e.g. the old and
	// the new root during a root rotation, or the root of an issuer that reports no
	// CA. The bundle (ConfigMap meshtls-trust-bundle, key ca.crt, in every meshed
	// namespace) is these roots plus the CA certificates cert-manager reported
	// (status.ca) for the operator's CertificateRequests; the operator never reads
	// Secrets.
	// +optional
	TrustBundle *TrustBundleSource `json:"trustBundle,omitempty"`
}

// IssuerReference names a cert-manager issuer.
type IssuerReference struct {
	// name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// kind of the issuer: ClusterIssuer (default), or Issuer, which means "an Issuer
	// of this name in each meshed namespace".
	// +optional
	// +kubebuilder:default=ClusterIssuer
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind,omitempty"`

	// group of the issuer: cert-manager.io (default), or the group of an external
	// issuer.
	// +optional
	// +kubebuilder:default="cert-manager.io"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// CertificateSettings shapes the workload certificates.
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || !has(self.duration) || duration(self.renewBefore) < duration(self.duration)",message="spec.certificate.renewBefore must be shorter than spec.certificate.duration",fieldPath=".renewBefore",reason=FieldValueInvalid
type CertificateSettings struct {
	// duration is how long a workload certificate is valid. Defaults to 24h.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	Duration *metav1.Duration `json:"duration,omitempty"`

	// renewBefore is how long before expiry a certificate is renewed; it must be
	// shorter than duration. Defaults to 8h.
	// +optional
	// +kubebuilder:default="8h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// privateKey is the key of each certificate; it is rotated at every renewal.
	// Defaults to ECDSA 256.
	// +optional
	// +kubebuilder:default={algorithm: ECDSA, size: 256}
	PrivateKey PrivateKeySettings `json:"privateKey,omitempty"`
}

// PrivateKeyAlgorithm is a private key algorithm.
type PrivateKeyAlgorithm string

const (
	// ECDSAKeyAlgorithm is ECDSA; sizes 256, 384, 521.
	ECDSAKeyAlgorithm PrivateKeyAlgorithm = "ECDSA"
	// RSAKeyAlgorithm is RSA; sizes 2048, 3072, 4096.
	RSAKeyAlgorithm PrivateKeyAlgorithm = "RSA"
	// Ed25519KeyAlgorithm is Ed25519; size does not apply.
	Ed25519KeyAlgorithm PrivateKeyAlgorithm = "Ed25519"
)

// PrivateKeySettings is the algorithm and size of a private key.
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !has(self.algorithm) || self.algorithm != 'ECDSA' || self.size in [256, 384, 521]",message="spec.certificate.privateKey.size must be 256, 384 or 521 for ECDSA",fieldPath=".size",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !has(self.algorithm) || self.algorithm != 'RSA' || self.size in [2048, 3072, 4096]",message="spec.certificate.privateKey.size must be 2048, 3072 or 4096 for RSA",fieldPath=".size",reason=FieldValueInvalid
type PrivateKeySettings struct {
	// algorithm is ECDSA (default), RSA or Ed25519.
	// +optional
	// +kubebuilder:default=ECDSA
	// +kubebuilder:validation:Enum=ECDSA;RSA;Ed25519
	Algorithm PrivateKeyAlgorithm `json:"algorithm,omitempty"`

	// size in bits: 256, 384 or 521 for ECDSA (256 when unset), 2048, 3072 or 4096 for
	// RSA (2048 when unset); ignored for Ed25519.
	// +optional
	Size int32 `json:"size,omitempty"`
}

// TrustBundleSource is where extra trust anchors come from.
type TrustBundleSource struct {
	// configMapRef names a ConfigMap in the operator namespace and the key that holds
	// PEM-encoded CA certificates.
	// +required
	ConfigMapRef LocalObjectKeyReference `json:"configMapRef"`
}

// ModeCounts counts meshed pods by effective inbound mode.
type ModeCounts struct {
	// strict is the number of pods whose effective mode is STRICT.
	// +optional
	Strict int32 `json:"strict"`
	// permissive is the number of pods whose effective mode is PERMISSIVE.
	// +optional
	Permissive int32 `json:"permissive"`
	// disable is the number of pods whose effective mode is DISABLE.
	// +optional
	Disable int32 `json:"disable"`
}

// MeshMTLSPolicyStatus is the observed state of the mesh.
type MeshMTLSPolicyStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, IssuerReady, TrustBundleReady and GuardInstalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// meshedNamespaces is the number of namespaces with at least one meshed pod.
	// +optional
	MeshedNamespaces int32 `json:"meshedNamespaces"`

	// meshedPods is the number of meshed pods.
	// +optional
	MeshedPods int32 `json:"meshedPods"`

	// podsByMode counts meshed pods by effective inbound mode.
	// +optional
	PodsByMode *ModeCounts `json:"podsByMode,omitempty"`

	// podsWithoutSidecar is the number of meshed pods that carry no proxy (labelled
	// meshed after they were created): nothing enforces their mode until they are
	// recreated.
	// +optional
	PodsWithoutSidecar int32 `json:"podsWithoutSidecar"`

	// certificates counts the workload Certificates the operator keeps.
	// +optional
	Certificates *CertificateCounts `json:"certificates,omitempty"`
}

// CertificateCounts counts workload Certificates by health.
type CertificateCounts struct {
	// ready is the number of Certificates cert-manager reports Ready.
	// +optional
	Ready int32 `json:"ready"`
	// failing is the number of Certificates that are not Ready (issuance failed or
	// pending), and of names held by Certificates the operator does not own.
	// +optional
	Failing int32 `json:"failing"`
	// expiring is the number of Ready Certificates whose notAfter is closer than
	// their renewBefore: cert-manager should have renewed them already.
	// +optional
	Expiring int32 `json:"expiring"`
}

// MeshMTLSPolicy is the single mesh-wide mTLS policy; its name must be "default".
// It sets the default mode, the floor no narrower policy may go below, the SPIFFE
// trust domain and the cert-manager issuer of workload certificates.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mmp,categories=meshtls
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="metadata.name must be 'default': there is one MeshMTLSPolicy, for the whole mesh"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Minimum",type=string,JSONPath=`.spec.minimumMode`
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuerRef.name`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.meshedPods`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshMTLSPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the mesh-wide policy.
	// +required
	Spec MeshMTLSPolicySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status MeshMTLSPolicyStatus `json:"status,omitempty"`
}

// MeshMTLSPolicyList is a list of MeshMTLSPolicy.
// +kubebuilder:object:root=true
type MeshMTLSPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshMTLSPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshMTLSPolicy{}, &MeshMTLSPolicyList{})
}
