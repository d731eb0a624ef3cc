package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// WorkloadMTLSPolicySpec is the mTLS policy of a set of pods in one namespace.
// +kubebuilder:validation:XValidation:rule="has(self.selector) != has(self.targetRefs)",message="exactly one of spec.selector and spec.targetRefs must be set: select pods by label, or attach to Services"
type WorkloadMTLSPolicySpec struct {
	// selector selects the pods of the policy's namespace by label. It may not be
	// empty: use the namespace's NamespaceMTLSPolicy for all of its pods. Exactly one of
	// selector and targetRefs is set.
	// +optional
	// +kubebuilder:validation:XValidation:rule="(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",message="spec.selector may not be empty: an empty selector selects every pod, which is what NamespaceMTLSPolicy is for"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="matchExpressions[].values must be non-empty when the operator is In or NotIn"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="matchExpressions[].values must be empty when the operator is Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || size(self.matchExpressions) <= 16",message="at most 16 matchExpressions"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || size(self.matchLabels) <= 32",message="at most 32 matchLabels"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !has(e.values) || size(e.values) <= 64)",message="at most 64 values in each of matchExpressions"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// targetRefs attaches the policy to core Services of its namespace (Gateway API
	// policy attachment): it selects the pods that each Service's spec.selector
	// matches. A Service without a selector selects no pods. Exactly one of selector
	// and targetRefs is set.
	// +optional
	// +listType=map
	// +listMapKey=group
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(r, r.group == '' && r.kind == 'Service')",message="spec.targetRefs may name only core Services: group \"\" and kind Service"
	TargetRefs []gwapiv1.LocalPolicyTargetReference `json:"targetRefs,omitempty"`

	// mode of the selected pods: UNSET (inherit the namespace mode, the default),
	// STRICT, PERMISSIVE or DISABLE.
	// +optional
	// +kubebuilder:default=UNSET
	// +kubebuilder:validation:Enum=UNSET;STRICT;PERMISSIVE;DISABLE
	Mode Mode `json:"mode,omitempty"`

	// portLevelMTLS sets the mode of single container ports of the selected pods; an
	// entry wins over mode. A port is enforced whether or not the pod declares it.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=64
	PortLevelMTLS []PortMTLS `json:"portLevelMTLS,omitempty"`
}

// WorkloadMTLSPolicyStatus is the observed state of a workload policy.
type WorkloadMTLSPolicyStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// selectedPods is the number of meshed pods this policy decides for; pods it loses
	// to an older conflicting policy are not counted.
	// +optional
	SelectedPods int32 `json:"selectedPods"`

	// undeclaredPorts lists portLevelMTLS ports that some selected pod does not
	// declare. They are enforced all the same; this is a warning, not an error.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	UndeclaredPorts []int32 `json:"undeclaredPorts,omitempty"`

	// conditions: Accepted, Conflicted, MinimumModeApplied and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// WorkloadMTLSPolicy sets the mTLS mode of the pods it selects in its namespace, by
// label selector or by attachment to Services, with optional per-port exceptions.
// Two workload policies may not select the same pod: admission refuses it, and a
// conflict that arises later goes to the oldest policy (creationTimestamp, then name).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=wmp,categories=meshtls
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.selectedPods`
// +kubebuilder:printcolumn:name="Conflicted",type=string,JSONPath=`.status.conditions[?(@.type=="Conflicted")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WorkloadMTLSPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the workload policy.
	// +required
	Spec WorkloadMTLSPolicySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status WorkloadMTLSPolicyStatus `json:"status,omitempty"`
}

// WorkloadMTLSPolicyList is a list of WorkloadMTLSPolicy.
// +kubebuilder:object:root=true
type WorkloadMTLSPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadMTLSPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&WorkloadMTLSPolicy{}, &WorkloadMTLSPolicyList{})
}
