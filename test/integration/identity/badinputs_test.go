package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

func TestIssuerMissingOrNotReady(t *testing.T) {
	const ns = "bad-issuer"
	setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) { s.IssuerRef.Name = "no-such-ca" })
	defer setMesh(t, nil)
	createNamespace(t, ns)
	defer deleteNamespace(t, ns)
	createPod(t, ns, "app-1", "app")

	t.Run("an issuerRef to a missing ClusterIssuer is reported, and the pods wait", func(t *testing.T) {
		waitMeshCondition(t, v1alpha1.ConditionIssuerReady, metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, "ClusterIssuer no-such-ca does not exist")
		waitPPCCertificate(t, ns, "app-1", func(c *v1alpha1.CertificateState) error {
			if c.Ready {
				return fmt.Errorf("spec.certificate is Ready without an issuer: %+v", c)
			}
			return nil
		})
		eventually(t, wait, func() error {
			if c := getMesh(t).Status.Certificates; c == nil || c.Failing < 1 {
				return fmt.Errorf("certificates %+v, want failing >= 1", c)
			}
			return nil
		})
	})

	t.Run("an issuer that is not Ready is reported with its reason", func(t *testing.T) {
		unready := &cmapi.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "unready-ca"},
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "no-such-secret"}}}}
		must(t, k8s.Create(context.Background(), unready))
		defer func() { _ = k8s.Delete(context.Background(), unready) }()
		setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) { s.IssuerRef.Name = "unready-ca" })
		waitMeshCondition(t, v1alpha1.ConditionIssuerReady, metav1.ConditionFalse, v1alpha1.ReasonIssuerNotReady, "ClusterIssuer unready-ca is not Ready")
	})

	t.Run("back on a Ready issuer, the Certificate is issued", func(t *testing.T) {
		setMesh(t, nil)
		waitMeshCondition(t, v1alpha1.ConditionIssuerReady, metav1.ConditionTrue)
		waitReady(t, ns, "app", "spiffe://cluster.local/ns/bad-issuer/sa/app")
	})
}

func TestTrustDomainChange(t *testing.T) {
	namespaces := []string{"td-a", "td-b"}
	setMesh(t, nil)
	defer setMesh(t, nil)
	for _, ns := range namespaces {
		createNamespace(t, ns)
		defer deleteNamespace(t, ns)
		createPod(t, ns, "app-1", "app")
		waitReady(t, ns, "app", "spiffe://cluster.local/ns/"+ns+"/sa/app")
	}
	setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) { s.TrustDomain = "prod.example" })
	for _, ns := range namespaces {
		id := "spiffe://prod.example/ns/" + ns + "/sa/app"
		waitReady(t, ns, "app", id)
		eventually(t, wait, func() error {
			l, err := readLeaf(ns, "app")
			if err != nil {
				return err
			}
			if len(l.leaf.URIs) != 1 || l.leaf.URIs[0].String() != id {
				return fmt.Errorf("the leaf of %s has %v, want %s", ns, l.leaf.URIs, id)
			}
			roots, _, err := readBundle(ns)
			if err != nil {
				return err
			}
			return verify(l, roots)
		})
		waitPPCCertificate(t, ns, "app-1", func(c *v1alpha1.CertificateState) error {
			p, err := getPPC(ns, "app-1")
			if err != nil {
				return err
			}
			if p.Spec.Identity != id || !c.Ready {
				return fmt.Errorf("identity %s, certificate %+v", p.Spec.Identity, c)
			}
			return nil
		})
	}
}

func TestInvalidTrustBundleKeepsTheOldOne(t *testing.T) {
	ctx := context.Background()
	const ns = "bad-tb"
	setMesh(t, nil)
	defer setMesh(t, nil)
	createNamespace(t, ns)
	defer deleteNamespace(t, ns)
	createPod(t, ns, "app-1", "app")
	waitReady(t, ns, "app", "spiffe://cluster.local/ns/bad-tb/sa/app")
	var before string
	eventually(t, wait, func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: identity.TrustBundleConfigMapName}, cm); err != nil {
			return err
		}
		before = cm.Data["ca.crt"]
		return nil
	})
	leaf, err := readLeaf(ns, "app")
	must(t, err)
	leafPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.leaf.Raw}))

	roots := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "bad-roots"}, Data: map[string]string{"ca.crt": "hello"}}
	setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.TrustBundle = &v1alpha1.TrustBundleSource{ConfigMapRef: v1alpha1.LocalObjectKeyReference{Name: "bad-roots", Key: "ca.crt"}}
	})
	for _, tc := range []struct {
		name string
		set  func()
		want string
	}{
		{"a trustBundle ConfigMap that does not exist", func() {}, "ConfigMap meshtls-system/bad-roots, key ca.crt, which does not exist"},
		{"a trustBundle with no valid PEM", func() { must(t, k8s.Create(ctx, roots)) }, "no PEM CERTIFICATE block"},
		{"a trustBundle with a workload certificate", func() {
			roots.Data["ca.crt"] = before + leafPEM
			must(t, k8s.Update(ctx, roots))
		}, "is not a CA certificate"},
	} {
		t.Run(tc.name+" is refused and the old bundle kept", func(t *testing.T) {
			tc.set()
			waitMeshCondition(t, v1alpha1.ConditionTrustBundleReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidTrustBundle, tc.want, "keep their current bundle")
			time.Sleep(time.Second)
			cm := &corev1.ConfigMap{}
			must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: identity.TrustBundleConfigMapName}, cm))
			if cm.Data["ca.crt"] != before {
				t.Fatalf("the bundle changed on a refused trustBundle:\n%s", cm.Data["ca.crt"])
			}
		})
	}
	_ = k8s.Delete(ctx, roots)
}

func TestForeignObjectsAreLeftAlone(t *testing.T) {
	ctx := context.Background()
	const ns = "bad-foreign"
	setMesh(t, nil)
	createNamespace(t, ns)
	defer deleteNamespace(t, ns)
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}))
	userCert := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-app", Labels: map[string]string{"team": "payments"}},
		Spec: cmapi.CertificateSpec{SecretName: "user-tls", DNSNames: []string{"user.example"},
			IssuerRef: cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "ClusterIssuer", Name: "mesh-ca"}},
	}
	userRB := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshtls-proxy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "alice"}},
	}
	userCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.TrustBundleConfigMapName}, Data: map[string]string{"ca.crt": "mine"}}
	for _, o := range []client.Object{userCert, userRB, userCM} {
		must(t, k8s.Create(ctx, o))
	}
	createPod(t, ns, "app-1", "app")

	t.Run("the PodProxyConfig says the Certificate is not the operator's", func(t *testing.T) {
		waitPPCCertificate(t, ns, "app-1", func(c *v1alpha1.CertificateState) error {
			if c.Ready || c.Reason != identity.ReasonNotOwned || !strings.Contains(c.Message, "not created by meshtls-operator") {
				return fmt.Errorf("spec.certificate %+v", c)
			}
			return nil
		})
	})
	t.Run("the mesh status names the three objects", func(t *testing.T) {
		waitMeshCondition(t, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotOwned,
			"Certificate bad-foreign/meshtls-app", "ConfigMap bad-foreign/meshtls-trust-bundle", "RoleBinding bad-foreign/meshtls-proxy")
	})
	t.Run("Warning Events name the ConfigMap and the RoleBinding", func(t *testing.T) {
		eventually(t, wait, func() error {
			events := &corev1.EventList{}
			if err := k8s.List(ctx, events, client.InNamespace(ns)); err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, e := range events.Items {
				if e.Reason == v1alpha1.ReasonNotOwned && e.Type == corev1.EventTypeWarning {
					seen[e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name] = true
				}
			}
			if !seen["ConfigMap/meshtls-trust-bundle"] || !seen["RoleBinding/meshtls-proxy"] {
				return fmt.Errorf("NotOwned events: %v", seen)
			}
			return nil
		})
	})
	t.Run("none of them was changed", func(t *testing.T) {
		time.Sleep(time.Second)
		cert, err := getCertificate(ns, "meshtls-app")
		must(t, err)
		if cert.Labels["app.kubernetes.io/managed-by"] != "" || cert.Spec.SecretName != "user-tls" || len(cert.Spec.URIs) != 0 || cert.Spec.DNSNames[0] != "user.example" {
			t.Errorf("the user's Certificate was changed: %+v %+v", cert.Labels, cert.Spec)
		}
		rb := &rbacv1.RoleBinding{}
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(userRB), rb))
		if rb.RoleRef.Name != "view" || rb.Subjects[0].Name != "alice" || rb.Labels["app.kubernetes.io/managed-by"] != "" {
			t.Errorf("the user's RoleBinding was changed: %+v %+v", rb.RoleRef, rb.Subjects)
		}
		cm := &corev1.ConfigMap{}
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(userCM), cm))
		if cm.Data["ca.crt"] != "mine" || cm.Labels["app.kubernetes.io/managed-by"] != "" {
			t.Errorf("the user's ConfigMap was changed: %+v", cm.Data)
		}
	})
	t.Run("once the user deletes them, the operator makes its own", func(t *testing.T) {
		for _, o := range []client.Object{userCert, userRB, userCM} {
			must(t, k8s.Delete(ctx, o))
		}
		waitReady(t, ns, "app", "spiffe://cluster.local/ns/bad-foreign/sa/app")
		eventually(t, wait, func() error {
			rb := &rbacv1.RoleBinding{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(userRB), rb); err != nil {
				return err
			}
			if rb.RoleRef.Name != "meshtls-proxy" {
				return fmt.Errorf("roleRef %s", rb.RoleRef.Name)
			}
			_, _, err := readBundle(ns)
			return err
		})
		waitMeshCondition(t, v1alpha1.ConditionReady, metav1.ConditionTrue)
	})
}

// TestExternalIssuerWithoutCA plays an external issuer (another API group, which
// cert-manager's approver leaves alone) that first denies a request, then signs one
// without reporting a CA, as some ACME and external issuers do.
func TestExternalIssuerWithoutCA(t *testing.T) {
	ctx := context.Background()
	const ns = "bad-ext"
	external := func(s *v1alpha1.MeshMTLSPolicySpec) {
		s.IssuerRef = v1alpha1.IssuerReference{Group: "issuers.example.com", Kind: "FakeIssuer", Name: "ext"}
	}
	setMesh(t, external)
	defer setMesh(t, nil)
	createNamespace(t, ns)
	defer deleteNamespace(t, ns)
	createPod(t, ns, "app-1", "app")

	t.Run("an external issuer is accepted and IssuerReady says it cannot judge it", func(t *testing.T) {
		waitMeshCondition(t, v1alpha1.ConditionIssuerReady, metav1.ConditionUnknown, v1alpha1.ReasonExternalIssuer, "cannot judge")
	})

	t.Run("a denied request becomes a Warning Event and spec.certificate, with the issuer's reason", func(t *testing.T) {
		cr := waitRequest(t, ns)
		cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
			Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue, Reason: "PolicyDenied", Message: "not on the allow list",
		})
		must(t, k8s.Status().Update(ctx, cr))
		waitPPCCertificate(t, ns, "app-1", func(c *v1alpha1.CertificateState) error {
			if c.Ready || c.Reason != "PolicyDenied" || !strings.Contains(c.Message, "not on the allow list") {
				return fmt.Errorf("spec.certificate %+v", c)
			}
			return nil
		})
		eventually(t, wait, func() error {
			events := &corev1.EventList{}
			if err := k8s.List(ctx, events, client.InNamespace(ns)); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.Reason == "PolicyDenied" && e.ReportingController == "meshtls-operator" && e.InvolvedObject.Name == "meshtls-app" &&
					strings.Contains(e.Message, "spiffe://cluster.local/ns/bad-ext/sa/app") {
					return nil
				}
			}
			return fmt.Errorf("no PolicyDenied event from meshtls-operator yet")
		})
	})

	ca := newTestCA(t)
	t.Run("a certificate issued without a CA leaves the bundle to spec.trustBundle, and the status says so", func(t *testing.T) {
		// cert-manager retries after a back-off, with a new key and a new request
		// (which it may replace again while the key rotates): answer whatever request
		// is undecided until the Certificate is Ready.
		eventually(t, 2*wait, func() error {
			cert, err := getCertificate(ns, "meshtls-app")
			if err != nil {
				return err
			}
			if certificateReady(cert) {
				return nil
			}
			cr := undecidedRequest(ns)
			if cr == nil {
				return fmt.Errorf("no undecided request; Certificate conditions %+v", cert.Status.Conditions)
			}
			cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
				Type: cmapi.CertificateRequestConditionReady, Status: cmmeta.ConditionTrue, Reason: "Issued", Message: "signed by the test"})
			cr.Status.Certificate = ca.sign(t, cr.Spec.Request)
			if err := k8s.Status().Update(ctx, cr); err != nil {
				return err
			}
			return fmt.Errorf("answered %s, waiting for cert-manager", cr.Name)
		})
		waitMeshCondition(t, v1alpha1.ConditionTrustBundleReady, metav1.ConditionFalse, v1alpha1.ReasonNoCA, "set spec.trustBundle.configMapRef")
	})

	t.Run("with the issuer's root in spec.trustBundle, the leaf chains to the namespace's bundle", func(t *testing.T) {
		roots := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "ext-roots"}, Data: map[string]string{"roots.pem": ca.pem}}
		must(t, k8s.Create(ctx, roots))
		defer func() { _ = k8s.Delete(ctx, roots) }()
		setMesh(t, func(s *v1alpha1.MeshMTLSPolicySpec) {
			external(s)
			s.TrustBundle = &v1alpha1.TrustBundleSource{ConfigMapRef: v1alpha1.LocalObjectKeyReference{Name: "ext-roots", Key: "roots.pem"}}
		})
		waitMeshCondition(t, v1alpha1.ConditionTrustBundleReady, metav1.ConditionTrue, "1 CA certificates")
		eventually(t, wait, func() error {
			l, err := readLeaf(ns, "app")
			if err != nil {
				return err
			}
			roots, _, err := readBundle(ns)
			if err != nil {
				return err
			}
			return verify(l, roots)
		})
	})
}

// waitRequest waits for a CertificateRequest of the namespace that the test, as the
// external issuer, has not decided yet.
func waitRequest(t *testing.T, ns string) *cmapi.CertificateRequest {
	t.Helper()
	var out *cmapi.CertificateRequest
	eventually(t, wait, func() error {
		if out = undecidedRequest(ns); out == nil {
			return fmt.Errorf("no undecided CertificateRequest in %s yet", ns)
		}
		return nil
	})
	return out
}

// undecidedRequest is a CertificateRequest of the namespace without an answer from
// the issuer (cert-manager's approver approves it; the issuer's answer is Ready or
// Denied); nil when there is none.
func undecidedRequest(ns string) *cmapi.CertificateRequest {
	list := &cmapi.CertificateRequestList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		return nil
	}
	for i := range list.Items {
		cr := &list.Items[i]
		decided := false
		for _, c := range cr.Status.Conditions {
			decided = decided || c.Type == cmapi.CertificateRequestConditionReady || c.Type == cmapi.CertificateRequestConditionDenied
		}
		if !decided && cr.DeletionTimestamp == nil {
			return cr
		}
	}
	return nil
}

// testCA is the external issuer's CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "external issuer root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// sign signs a PEM CSR as the request asks (its URIs), for an hour.
func (ca *testCA) sign(t *testing.T, csrPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		t.Fatal("the request holds no PEM CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: csr.URIs,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
