package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NamespaceMTLSPolicyName is the only name a NamespaceMTLSPolicy may have.
const NamespaceMTLSPolicyName = "default"

// NamespaceMTLSPolicySpec is the mTLS policy of one namespace.
type NamespaceMTLSPolicySpec struct {
	// mode of every meshed pod in the namespace that no workload policy decides for:
	// UNSET (inherit the mesh mode, the default), STRICT, PERMISSIVE or DISABLE.
	// +optional
	// +kubebuilder:default=UNSET
	// +kubebuilder:validation:Enum=UNSET;STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode,omitempty"`
}

// NamespaceMTLSPolicyStatus is the observed state of a namespace policy.
type NamespaceMTLSPolicyStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// effectiveMode is the namespace's mode after inheritance from the mesh and the
	// mesh floor.
	// +optional
	// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
	EffectiveMode Mode `json:"effectiveMode,omitempty"`

	// selectedPods is the number of meshed pods in the namespace whose mode this
	// policy decides (pods decided by a workload policy are not counted).
	// +optional
	SelectedPods int32 `json:"selectedPods"`

	// conditions: Accepted, MinimumModeApplied and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NamespaceMTLSPolicy sets the mTLS mode of one namespace; its name must be "default".
// A WorkloadMTLSPolicy overrides it for the pods it selects; the MeshMTLSPolicy
// applies where it is absent or UNSET.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=nmp,categories=meshtls
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="metadata.name must be 'default': there is one NamespaceMTLSPolicy per namespace"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Effective",type=string,JSONPath=`.status.effectiveMode`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.selectedPods`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NamespaceMTLSPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the namespace policy.
	// +optional
	// +kubebuilder:default={}
	Spec NamespaceMTLSPolicySpec `json:"spec,omitempty"`

	// status is written by the operator.
	// +optional
	Status NamespaceMTLSPolicyStatus `json:"status,omitempty"`
}

// NamespaceMTLSPolicyList is a list of NamespaceMTLSPolicy.
// +kubebuilder:object:root=true
type NamespaceMTLSPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NamespaceMTLSPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NamespaceMTLSPolicy{}, &NamespaceMTLSPolicyList{})
}
