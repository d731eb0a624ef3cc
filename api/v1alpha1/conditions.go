package v1alpha1

// Condition types. Every kind follows kstatus: Ready is True once the object is fully
// reconciled; Reconciling and Stalled appear where they apply.
const (
	// ConditionReady is True when the object is fully reconciled.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still making changes.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when progress needs a change from a user.
	ConditionStalled = "Stalled"

	// ConditionAccepted says whether a policy is valid and in force (policies).
	ConditionAccepted = "Accepted"
	// ConditionConflicted says whether a WorkloadMTLSPolicy lost pods to an older
	// policy that selects them too.
	ConditionConflicted = "Conflicted"
	// ConditionMinimumModeApplied is True when the mesh minimumMode raised the mode
	// a policy asked for.
	ConditionMinimumModeApplied = "MinimumModeApplied"
	// ConditionIssuerReady says whether the cert-manager issuer of the mesh is ready.
	ConditionIssuerReady = "IssuerReady"
	// ConditionGuardInstalled (MeshMTLSPolicy) says whether the PodProxyConfig guard
	// (config/guard) is installed and bound; when False, its message says how to
	// install it. The operator never installs it itself.
	ConditionGuardInstalled = "GuardInstalled"

	// ConditionApplied is set by a proxy: True once it enforces spec.configHash.
	ConditionApplied = "Applied"
	// ConditionCertificateReady is set by a proxy: True once it holds a valid
	// certificate for its identity.
	ConditionCertificateReady = "CertificateReady"

	// ConditionProgressing is True while an MTLSRollout is promoting namespaces.
	ConditionProgressing = "Progressing"
)

// Condition reasons.
const (
	// ReasonAccepted: the policy is valid and in force.
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the policy is refused for a reason the message gives.
	ReasonInvalid = "Invalid"
	// ReasonTargetNotFound: a targetRef names a Service that does not exist.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonConflicted: an older policy selects some of the same pods and wins them.
	ReasonConflicted = "Conflicted"
	// ReasonNoConflict: no other policy selects this policy's pods.
	ReasonNoConflict = "NoConflict"
	// ReasonBelowMinimumMode: the mode asked for is below the mesh minimumMode and
	// was raised to it.
	ReasonBelowMinimumMode = "BelowMinimumMode"
	// ReasonAtOrAboveMinimumMode: the mode asked for is at or above the mesh floor.
	ReasonAtOrAboveMinimumMode = "AtOrAboveMinimumMode"
	// ReasonReconciled: the object is fully reconciled.
	ReasonReconciled = "Reconciled"
	// ReasonReconcileError: the last reconcile failed; the message says why.
	ReasonReconcileError = "ReconcileError"
	// ReasonProxyConfigNotOwned: a PodProxyConfig with a selected pod's name exists
	// that the operator did not create; it is left alone and the pod goes without
	// its resolved configuration until it is deleted.
	ReasonProxyConfigNotOwned = "ProxyConfigNotOwned"
)
