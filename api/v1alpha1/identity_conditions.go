package v1alpha1

// Workload identity: the MeshMTLSPolicy conditions about the issuer and the trust
// bundle, and their reasons.
const (
	// ConditionTrustBundleReady says whether every meshed namespace holds the current
	// trust bundle (ConfigMap meshtls-trust-bundle, key ca.crt).
	ConditionTrustBundleReady = "TrustBundleReady"
)

// IssuerReady reasons.
const (
	// ReasonIssuerReady: the referenced Issuer or ClusterIssuer exists and is Ready.
	ReasonIssuerReady = "IssuerReady"
	// ReasonIssuerNotFound: the referenced ClusterIssuer (or, for kind Issuer, the
	// Issuer in some meshed namespace) does not exist.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonIssuerNotReady: the referenced issuer exists but is not Ready.
	ReasonIssuerNotReady = "IssuerNotReady"
	// ReasonExternalIssuer: the issuer is of another API group than cert-manager.io;
	// the operator cannot judge its readiness and the condition is Unknown.
	ReasonExternalIssuer = "ExternalIssuer"
	// ReasonInvalidIssuerRef: a cert-manager.io issuerRef of a kind other than
	// Issuer or ClusterIssuer.
	ReasonInvalidIssuerRef = "InvalidIssuerRef"
)

// TrustBundleReady reasons.
const (
	// ReasonTrustBundleDistributed: every meshed namespace holds the current bundle.
	ReasonTrustBundleDistributed = "Distributed"
	// ReasonTrustBundleDistributing: some meshed namespaces do not hold it yet.
	ReasonTrustBundleDistributing = "Distributing"
	// ReasonInvalidTrustBundle: the spec.trustBundle ConfigMap is missing, lacks its
	// key, holds no PEM certificate, or holds a certificate that is not a CA; the
	// namespaces keep the bundle they have.
	ReasonInvalidTrustBundle = "InvalidTrustBundle"
	// ReasonNoCA: certificates were issued but the issuer reported no CA certificate
	// for them (some ACME and external issuers do not); set spec.trustBundle.
	ReasonNoCA = "NoCA"
	// ReasonWaitingForCA: no workload certificate is issued yet, so no CA is known.
	ReasonWaitingForCA = "WaitingForCA"
	// ReasonNotOwned: an object the operator keeps (a workload Certificate, the
	// trust-bundle ConfigMap, the proxies' RoleBinding) exists under its name but
	// was not created by the operator; it is left alone.
	ReasonNotOwned = "NotOwned"
)
