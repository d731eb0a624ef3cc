package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RolloutPhase is the phase of an MTLSRollout.
// +kubebuilder:validation:Enum=Pending;Progressing;Paused;Succeeded;RolledBack;Failed
type RolloutPhase string

const (
	// RolloutPending: not started yet: it selects no namespace, or an older
	// unfinished rollout selects some of the same namespaces.
	RolloutPending RolloutPhase = "Pending"
	// RolloutProgressing: promoting namespaces.
	RolloutProgressing RolloutPhase = "Progressing"
	// RolloutPaused: spec.paused is true.
	RolloutPaused RolloutPhase = "Paused"
	// RolloutSucceeded: every selected namespace is promoted and soaked.
	RolloutSucceeded RolloutPhase = "Succeeded"
	// RolloutRolledBack: a promoted namespace failed and its previous mode was restored.
	RolloutRolledBack RolloutPhase = "RolledBack"
	// RolloutFailed: a promoted namespace failed and was left as it is.
	RolloutFailed RolloutPhase = "Failed"
)

// Reasons of the MTLSRollout conditions (Ready, Progressing, Reconciling, Stalled).
const (
	// RolloutReasonWaiting: namespaces wait for their pods (configuration not
	// applied, certificates not ready, plaintext seen) or for a free slot.
	RolloutReasonWaiting = "Waiting"
	// RolloutReasonPromoting: a namespace has been promoted and its pods are applying
	// the target mode, or it is soaking.
	RolloutReasonPromoting = "Promoting"
	// RolloutReasonPaused: spec.paused is true; no namespace is promoted until it is
	// false again (one already promoted finishes its soak).
	RolloutReasonPaused = "Paused"
	// RolloutReasonSucceeded: every selected namespace is at the target mode and soaked.
	RolloutReasonSucceeded = "Succeeded"
	// RolloutReasonRolledBack: a namespace failed after promotion and its previous mode
	// was restored; the rollout stopped.
	RolloutReasonRolledBack = "RolledBack"
	// RolloutReasonFailed: a namespace failed after promotion and was left as it is
	// (rollbackOnFailure is false); the rollout stopped.
	RolloutReasonFailed = "Failed"
	// RolloutReasonNoNamespaces: spec.namespaceSelector selects no namespace.
	RolloutReasonNoNamespaces = "NoNamespaces"
	// RolloutReasonInvalidSelector: spec.namespaceSelector cannot be parsed.
	RolloutReasonInvalidSelector = "InvalidSelector"
	// RolloutReasonOverlap: an older unfinished rollout selects some of the same
	// namespaces; this one waits for it.
	RolloutReasonOverlap = "OverlappingRollout"
	// RolloutReasonPodsWithoutSidecar: nothing can move until meshed pods without a
	// sidecar are recreated (they cannot speak mTLS).
	RolloutReasonPodsWithoutSidecar = "PodsWithoutSidecar"
	// RolloutReasonNamespaceNotReady: a namespace has waited longer than
	// spec.progressDeadline; the rollout keeps waiting for it.
	RolloutReasonNamespaceNotReady = "NamespaceNotReady"
	// RolloutReasonModeContested: someone else kept changing spec.mode of a promoted
	// namespace's policy; the namespace failed.
	RolloutReasonModeContested = "ModeContested"
	// RolloutReasonRollbackNotApplied: a namespace's previous mode could not be
	// written back yet.
	RolloutReasonRollbackNotApplied = "RollbackNotApplied"
)

// Annotations the rollout sets on a NamespaceMTLSPolicy it promoted, until the
// namespace has soaked, so that a rollout re-created meanwhile resumes the soak
// instead of skipping a namespace that looks STRICT already.
const (
	AnnotationPromotedBy   = "meshtls.io/promoted-by"
	AnnotationPromotedAt   = "meshtls.io/promoted-at"
	AnnotationPreviousMode = "meshtls.io/previous-mode"
)

// NamespaceRolloutState is the state of one namespace in a rollout.
// +kubebuilder:validation:Enum=Pending;Waiting;Promoted;Soaking;Succeeded;RolledBack;Failed;Skipped;Removed
type NamespaceRolloutState string

const (
	// NamespacePending: not yet considered.
	NamespacePending NamespaceRolloutState = "Pending"
	// NamespaceWaiting: waiting for its pods to be ready for promotion.
	NamespaceWaiting NamespaceRolloutState = "Waiting"
	// NamespacePromoted: set to the target mode.
	NamespacePromoted NamespaceRolloutState = "Promoted"
	// NamespaceSoaking: promoted, watched for soakDuration.
	NamespaceSoaking NamespaceRolloutState = "Soaking"
	// NamespaceSucceeded: promoted and soaked cleanly.
	NamespaceSucceeded NamespaceRolloutState = "Succeeded"
	// NamespaceRolledBack: failed and restored to its previous mode.
	NamespaceRolledBack NamespaceRolloutState = "RolledBack"
	// NamespaceFailed: failed and left as it is.
	NamespaceFailed NamespaceRolloutState = "Failed"
	// NamespaceSkipped: already at the target mode when the rollout came to it; the
	// rollout did not write its policy.
	NamespaceSkipped NamespaceRolloutState = "Skipped"
	// NamespaceRemoved: no longer selected (or deleted) before it finished; left as it
	// was, and reported.
	NamespaceRemoved NamespaceRolloutState = "Removed"
)

// MTLSRolloutSpec says which namespaces to move to which mode, and how carefully.
type MTLSRolloutSpec struct {
	// targetMode is the mode namespaces are moved to; only STRICT for now.
	// +optional
	// +kubebuilder:default=STRICT
	// +kubebuilder:validation:Enum=STRICT
	TargetMode Mode `json:"targetMode,omitempty"`

	// namespaceSelector selects the namespaces to promote.
	// +required
	// +kubebuilder:validation:XValidation:rule="(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",message="spec.namespaceSelector may not be empty: an empty selector selects every namespace, kube-system included; select the namespaces to migrate"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="matchExpressions[].values must be non-empty when the operator is In or NotIn"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="matchExpressions[].values must be empty when the operator is Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || size(self.matchExpressions) <= 16",message="at most 16 matchExpressions"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchLabels) || size(self.matchLabels) <= 32",message="at most 32 matchLabels"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !has(e.values) || size(e.values) <= 64)",message="at most 64 values in each of matchExpressions"
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	// maxConcurrent is how many namespaces are promoted at a time. Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxConcurrent int32 `json:"maxConcurrent,omitempty"`

	// soakDuration is the clean time a promoted namespace needs before the next step.
	// Defaults to 5m.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	SoakDuration *metav1.Duration `json:"soakDuration,omitempty"`

	// plaintextWindow: a namespace is promoted only when none of its pods accepted a
	// plaintext connection in this window. Defaults to 10m.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	PlaintextWindow *metav1.Duration `json:"plaintextWindow,omitempty"`

	// rollbackOnFailure restores a failed namespace's previous mode. Defaults to true.
	// +optional
	// +kubebuilder:default=true
	RollbackOnFailure *bool `json:"rollbackOnFailure,omitempty"`

	// paused stops the rollout from promoting more namespaces.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// progressDeadline: a namespace whose turn came but that has not moved on (its
	// pods not ready, or not applying the target mode) for longer than this sets
	// Stalled=True with reason NamespaceNotReady, naming it and its blocking pods. The
	// rollout keeps waiting; Stalled clears when the namespace moves. Defaults to 30m.
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	ProgressDeadline *metav1.Duration `json:"progressDeadline,omitempty"`
}

// NamespaceRolloutStatus is the rollout state of one namespace.
type NamespaceRolloutStatus struct {
	// name of the namespace.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// state of the namespace in the rollout.
	// +required
	State NamespaceRolloutState `json:"state"`

	// previousMode is the namespace policy's mode before promotion, restored on
	// rollback.
	// +optional
	// +kubebuilder:validation:Enum=UNSET;STRICT;PERMISSIVE;DISABLE
	PreviousMode Mode `json:"previousMode,omitempty"`

	// since is when the namespace entered its state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// message says what the namespace waits for, or why it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// reason is the machine-readable cause of the state or message, e.g.
	// PlaintextRejected, ModeContested, BelowMinimumMode.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// lastPlaintextTime is the latest plaintext connection any pod of the namespace
	// reported while the rollout watched it. It is kept here so that deleting the pod
	// does not erase the evidence: promotion waits plaintextWindow after it.
	// +optional
	LastPlaintextTime *metav1.Time `json:"lastPlaintextTime,omitempty"`

	// lastPlaintextPod is the pod that reported lastPlaintextTime.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LastPlaintextPod string `json:"lastPlaintextPod,omitempty"`

	// soakRestarts counts how often spec.mode was changed by someone else after
	// promotion, so that the rollout had to write it again and start the soak over.
	// After 3 the namespace fails with reason ModeContested.
	// +optional
	SoakRestarts int32 `json:"soakRestarts,omitempty"`

	// createdPolicy: the rollout created the NamespaceMTLSPolicy "default" when it
	// promoted the namespace; a rollback deletes it again when nobody else has set a
	// field of it since.
	// +optional
	CreatedPolicy bool `json:"createdPolicy,omitempty"`

	// rolledBackAt is when the rollback write succeeded. The rollback is done then,
	// whatever happens to spec.mode afterwards.
	// +optional
	RolledBackAt *metav1.Time `json:"rolledBackAt,omitempty"`

	// rejectedPlaintextAtPromotion is the rejectedPlaintext counter, at promotion, of
	// each pod whose counter was not zero then. A rise above it after promotion is a
	// failure; a counter below it means the proxy restarted, and all of it counts.
	// Cleared once the namespace has soaked.
	// +optional
	// +listType=map
	// +listMapKey=pod
	// +kubebuilder:validation:MaxItems=1000
	RejectedPlaintextAtPromotion []PodCounter `json:"rejectedPlaintextAtPromotion,omitempty"`
}

// PodCounter is a counter of one pod.
type PodCounter struct {
	// pod is the pod's name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod"`

	// value of the counter.
	// +required
	Value int64 `json:"value"`
}

// MTLSRolloutStatus is the observed state of a rollout; all of its state is here, so
// it survives operator restarts.
type MTLSRolloutStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase of the rollout.
	// +optional
	Phase RolloutPhase `json:"phase,omitempty"`

	// namespaces is the state of each selected namespace.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=10000
	Namespaces []NamespaceRolloutStatus `json:"namespaces,omitempty"`

	// conditions: Ready, Progressing and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MTLSRollout moves a set of namespaces to STRICT in steps: it promotes a namespace
// only once all its pods enforce their configuration with a ready certificate and no
// plaintext was seen, watches it for soakDuration, and rolls it back if plaintext is
// rejected.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mro,categories=meshtls
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetMode`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MTLSRollout struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the rollout plan.
	// +required
	Spec MTLSRolloutSpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status MTLSRolloutStatus `json:"status,omitempty"`
}

// MTLSRolloutList is a list of MTLSRollout.
// +kubebuilder:object:root=true
type MTLSRolloutList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MTLSRollout `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MTLSRollout{}, &MTLSRolloutList{})
}
