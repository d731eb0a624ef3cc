package identity

import (
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func meshSpec(mutate ...func(*v1alpha1.MeshMTLSPolicySpec)) v1alpha1.MeshMTLSPolicySpec {
	s := v1alpha1.MeshMTLSPolicySpec{
		TrustDomain: "cluster.local",
		IssuerRef:   v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
		Certificate: v1alpha1.CertificateSettings{
			Duration:    &metav1.Duration{Duration: time.Hour},
			RenewBefore: &metav1.Duration{Duration: 20 * time.Minute},
			PrivateKey:  v1alpha1.PrivateKeySettings{Algorithm: v1alpha1.ECDSAKeyAlgorithm, Size: 384},
		},
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

func TestCertificate(t *testing.T) {
	c := Certificate(meshSpec(), "shop", "finance")
	if c.Name != "meshtls-finance" || c.Namespace != "shop" || c.Spec.SecretName != "meshtls-finance-tls" {
		t.Fatalf("names: %s/%s secret %s", c.Namespace, c.Name, c.Spec.SecretName)
	}
	if len(c.Spec.URIs) != 1 || c.Spec.URIs[0] != "spiffe://cluster.local/ns/shop/sa/finance" {
		t.Fatalf("URIs = %v", c.Spec.URIs)
	}
	if len(c.Spec.DNSNames)+len(c.Spec.IPAddresses)+len(c.Spec.EmailAddresses) > 0 || c.Spec.CommonName != "" || c.Spec.IsCA {
		t.Fatalf("the certificate asks for more than its SPIFFE ID: %+v", c.Spec)
	}
	wantUsages := []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth, cmapi.UsageClientAuth}
	if strings.Join(usages(c.Spec.Usages), ",") != strings.Join(usages(wantUsages), ",") {
		t.Fatalf("usages = %v", c.Spec.Usages)
	}
	pk := c.Spec.PrivateKey
	if pk.RotationPolicy != cmapi.RotationPolicyAlways || pk.Algorithm != cmapi.ECDSAKeyAlgorithm || pk.Size != 384 {
		t.Fatalf("private key = %+v", pk)
	}
	if c.Spec.Duration.Duration != time.Hour || c.Spec.RenewBefore.Duration != 20*time.Minute {
		t.Fatalf("duration %v renewBefore %v", c.Spec.Duration, c.Spec.RenewBefore)
	}
	if c.Spec.IssuerRef != (cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}) {
		t.Fatalf("issuerRef = %+v", c.Spec.IssuerRef)
	}
	if !Owned(c, "finance") || Owned(c, "other") {
		t.Fatal("the built Certificate must be owned for its own service account only")
	}
}

func usages(u []cmapi.KeyUsage) []string {
	out := make([]string, len(u))
	for i, x := range u {
		out[i] = string(x)
	}
	return out
}

func TestCertificateDefaults(t *testing.T) {
	c := Certificate(v1alpha1.MeshMTLSPolicySpec{IssuerRef: v1alpha1.IssuerReference{Name: "x"}}, "ns", "sa")
	if c.Spec.Duration.Duration != DefaultDuration || c.Spec.RenewBefore.Duration != DefaultRenewBefore {
		t.Fatalf("defaults: %v %v", c.Spec.Duration, c.Spec.RenewBefore)
	}
	if c.Spec.IssuerRef.Kind != "ClusterIssuer" || c.Spec.IssuerRef.Group != "cert-manager.io" {
		t.Fatalf("issuer defaults: %+v", c.Spec.IssuerRef)
	}
	if c.Spec.PrivateKey.Algorithm != cmapi.ECDSAKeyAlgorithm || c.Spec.PrivateKey.Size != 256 {
		t.Fatalf("key defaults: %+v", c.Spec.PrivateKey)
	}
	if c.Spec.URIs[0] != "spiffe://cluster.local/ns/ns/sa/sa" {
		t.Fatalf("trust domain default: %v", c.Spec.URIs)
	}
	rsa := Certificate(meshSpec(func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.Certificate.PrivateKey = v1alpha1.PrivateKeySettings{Algorithm: v1alpha1.RSAKeyAlgorithm}
	}), "ns", "sa")
	if rsa.Spec.PrivateKey.Algorithm != cmapi.RSAKeyAlgorithm || rsa.Spec.PrivateKey.Size != 2048 {
		t.Fatalf("RSA default size: %+v", rsa.Spec.PrivateKey)
	}
	ed := Certificate(meshSpec(func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.Certificate.PrivateKey = v1alpha1.PrivateKeySettings{Algorithm: v1alpha1.Ed25519KeyAlgorithm, Size: 256}
	}), "ns", "sa")
	if ed.Spec.PrivateKey.Algorithm != cmapi.Ed25519KeyAlgorithm || ed.Spec.PrivateKey.Size != 0 {
		t.Fatalf("Ed25519 has no size: %+v", ed.Spec.PrivateKey)
	}
}

func TestNeedsUpdate(t *testing.T) {
	want := Certificate(meshSpec(), "shop", "finance")
	tests := map[string]struct {
		mutate func(*cmapi.Certificate)
		want   bool
	}{
		"should not update an identical Certificate":            {mutate: func(*cmapi.Certificate) {}},
		"should not update for labels others added":             {mutate: func(c *cmapi.Certificate) { c.Labels["team"] = "x" }},
		"should not update for status":                          {mutate: func(c *cmapi.Certificate) { c.Status.Revision = ptr.To(3) }},
		"should update a new trust domain":                      {mutate: func(c *cmapi.Certificate) { c.Spec.URIs = []string{"spiffe://old/ns/shop/sa/finance"} }, want: true},
		"should update a new issuer":                            {mutate: func(c *cmapi.Certificate) { c.Spec.IssuerRef.Name = "old-ca" }, want: true},
		"should update a new duration":                          {mutate: func(c *cmapi.Certificate) { c.Spec.Duration = &metav1.Duration{Duration: 2 * time.Hour} }, want: true},
		"should update a new renewBefore":                       {mutate: func(c *cmapi.Certificate) { c.Spec.RenewBefore = nil }, want: true},
		"should update a new key size":                          {mutate: func(c *cmapi.Certificate) { c.Spec.PrivateKey.Size = 256 }, want: true},
		"should update a rotation policy set to Never":          {mutate: func(c *cmapi.Certificate) { c.Spec.PrivateKey.RotationPolicy = cmapi.RotationPolicyNever }, want: true},
		"should update usages edited by hand":                   {mutate: func(c *cmapi.Certificate) { c.Spec.Usages = c.Spec.Usages[:1] }, want: true},
		"should update a DNS name added by hand":                {mutate: func(c *cmapi.Certificate) { c.Spec.DNSNames = []string{"evil"} }, want: true},
		"should update a common name added by hand":             {mutate: func(c *cmapi.Certificate) { c.Spec.CommonName = "x" }, want: true},
		"should update CA rights added by hand":                 {mutate: func(c *cmapi.Certificate) { c.Spec.IsCA = true }, want: true},
		"should update a lost managed-by label":                 {mutate: func(c *cmapi.Certificate) { delete(c.Labels, ManagedByLabel) }, want: true},
		"should update a changed service-account annotation":    {mutate: func(c *cmapi.Certificate) { c.Annotations[ServiceAccountAnnotation] = "x" }, want: true},
		"should update a secret name changed by hand":           {mutate: func(c *cmapi.Certificate) { c.Spec.SecretName = "x" }, want: true},
		"should update a revision history limit edited by hand": {mutate: func(c *cmapi.Certificate) { c.Spec.RevisionHistoryLimit = ptr.To[int32](5) }, want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cur := want.DeepCopy()
			tc.mutate(cur)
			if got := NeedsUpdate(cur, want); got != tc.want {
				t.Fatalf("NeedsUpdate = %v, want %v", got, tc.want)
			}
		})
	}
}

func withConditions(c *cmapi.Certificate, conds ...cmapi.CertificateCondition) *cmapi.Certificate {
	c = c.DeepCopy()
	c.Status.Conditions = conds
	return c
}

func TestState(t *testing.T) {
	const id = "spiffe://cluster.local/ns/shop/sa/finance"
	ours := Certificate(meshSpec(), "shop", "finance")
	ours.Generation = 2
	ready := cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, Reason: "Ready", Message: "Certificate is up to date and has not expired", ObservedGeneration: 2}
	foreign := ours.DeepCopy()
	foreign.Labels = nil
	otherSA := ours.DeepCopy()
	otherSA.Annotations[ServiceAccountAnnotation] = "someone-else"
	tests := map[string]struct {
		cert       *cmapi.Certificate
		wantReady  bool
		wantReason string
		wantMsg    string
	}{
		"should be Pending when the Certificate does not exist": {
			cert: nil, wantReason: ReasonPending, wantMsg: "waiting for cert-manager to issue"},
		"should be NotOwned for a Certificate without our label": {
			cert: withConditions(foreign, ready), wantReason: ReasonNotOwned, wantMsg: "not created by meshtls-operator"},
		"should be NotOwned for our Certificate of another service account": {
			cert: withConditions(otherSA, ready), wantReason: ReasonNotOwned},
		"should be Pending while cert-manager has not reported": {
			cert: ours, wantReason: ReasonPending, wantMsg: "waiting for cert-manager"},
		"should be Pending while Ready is for an older generation": {
			cert:       withConditions(ours, cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, Reason: "Ready", ObservedGeneration: 1}),
			wantReason: ReasonPending, wantMsg: "current spec"},
		"should be Pending while the Certificate asks for another identity": {
			cert: func() *cmapi.Certificate {
				c := withConditions(ours, ready)
				c.Spec.URIs = []string{"spiffe://old.domain/ns/shop/sa/finance"}
				return c
			}(),
			wantReason: ReasonPending, wantMsg: "being changed to the identity " + id},
		"should be Ready with cert-manager's reason when Ready": {
			cert: withConditions(ours, ready), wantReady: true, wantReason: "Ready", wantMsg: "up to date"},
		"should carry cert-manager's reason when not Ready": {
			cert:       withConditions(ours, cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionFalse, Reason: "DoesNotExist", Message: "Issuing certificate as Secret does not exist", ObservedGeneration: 2}),
			wantReason: "DoesNotExist", wantMsg: "Secret does not exist"},
		"should carry the failed request's reason when issuance failed": {
			cert: withConditions(ours,
				cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionFalse, Reason: "DoesNotExist", ObservedGeneration: 2},
				cmapi.CertificateCondition{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionFalse, Reason: "Denied", Message: "The certificate request has failed to complete and will be retried: denied by policy", ObservedGeneration: 2}),
			wantReason: "Denied", wantMsg: "denied by policy"},
		"should not take a finished issuance for a failure": {
			cert: withConditions(ours, ready,
				cmapi.CertificateCondition{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionFalse, Reason: "Issued", ObservedGeneration: 2}),
			wantReady: true, wantReason: "Ready"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := State(tc.cert, "finance", id)
			if st.Name != "meshtls-finance" || st.Ready != tc.wantReady || st.Reason != tc.wantReason || !strings.Contains(st.Message, tc.wantMsg) {
				t.Fatalf("got %+v, want ready=%v reason=%s message containing %q", st, tc.wantReady, tc.wantReason, tc.wantMsg)
			}
		})
	}
}

func TestHealthOf(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cert := Certificate(meshSpec(), "shop", "finance")
	cert.Status.NotAfter = &metav1.Time{Time: now.Add(30 * time.Minute)} // renewBefore is 20m: renew at +10m
	ready := v1alpha1.CertificateState{Ready: true}
	if h, recheck := HealthOf(cert, ready, now); h != Ready || !recheck.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("a fresh certificate should be Ready with a recheck at its renewal time, got %v %v", h, recheck)
	}
	if h, _ := HealthOf(cert, ready, now.Add(11*time.Minute)); h != Expiring {
		t.Fatalf("a certificate past its renewal time should be Expiring, got %v", h)
	}
	cert.Status.RenewalTime = &metav1.Time{Time: now.Add(time.Minute)}
	if h, _ := HealthOf(cert, ready, now.Add(2*time.Minute)); h != Expiring {
		t.Fatalf("status.renewalTime should win, got %v", h)
	}
	if h, _ := HealthOf(cert, v1alpha1.CertificateState{}, now); h != Failing {
		t.Fatalf("a certificate that is not Ready should be Failing, got %v", h)
	}
}

func TestFailureTime(t *testing.T) {
	cert := Certificate(meshSpec(), "shop", "finance")
	if !FailureTime(cert).IsZero() {
		t.Fatal("no failure, no time")
	}
	at := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cert.Status.LastFailureTime = &at
	cert.Status.Conditions = []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionFalse, Reason: "Failed"}}
	if !FailureTime(cert).Equal(at.Time) {
		t.Fatalf("want lastFailureTime, got %v", FailureTime(cert))
	}
}
