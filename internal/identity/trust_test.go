package identity

import (
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func TestSameIssuer(t *testing.T) {
	cluster := IssuerRef(v1alpha1.IssuerReference{Name: "mesh-ca"})
	local := IssuerRef(v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "Issuer"})
	external := IssuerRef(v1alpha1.IssuerReference{Name: "ext", Kind: "FakeIssuer", Group: "issuers.example.com"})
	for _, tc := range []struct {
		name string
		mesh cmmeta.IssuerReference
		ref  cmmeta.IssuerReference
		want bool
	}{
		{"the same ClusterIssuer", cluster, cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}, true},
		{"an empty group is cert-manager.io", cluster, cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer"}, true},
		{"another name", cluster, cmmeta.IssuerReference{Name: "evil", Kind: "ClusterIssuer", Group: "cert-manager.io"}, false},
		{"an Issuer of the ClusterIssuer's name", cluster, cmmeta.IssuerReference{Name: "mesh-ca", Kind: "Issuer", Group: "cert-manager.io"}, false},
		{"an empty kind is Issuer, not ClusterIssuer", cluster, cmmeta.IssuerReference{Name: "mesh-ca"}, false},
		{"an empty kind is Issuer", local, cmmeta.IssuerReference{Name: "mesh-ca"}, true},
		{"another group", cluster, cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "evil.example.com"}, false},
		{"the external issuer", external, cmmeta.IssuerReference{Name: "ext", Kind: "FakeIssuer", Group: "issuers.example.com"}, true},
		{"an external group with no kind", external, cmmeta.IssuerReference{Name: "ext", Group: "issuers.example.com"}, false},
		{"no mesh issuer", cmmeta.IssuerReference{}, cmmeta.IssuerReference{}, false},
	} {
		if got := SameIssuer(tc.mesh, tc.ref); got != tc.want {
			t.Errorf("%s: SameIssuer(%+v, %+v) = %v, want %v", tc.name, tc.mesh, tc.ref, got, tc.want)
		}
	}
}

func TestRequestTrusted(t *testing.T) {
	spec := v1alpha1.MeshMTLSPolicySpec{IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca"}}
	mesh := IssuerRef(spec.IssuerRef)
	evil := cmmeta.IssuerReference{Name: "evil", Kind: "Issuer", Group: "cert-manager.io"}
	cert := func() *cmapi.Certificate {
		c := Certificate(spec, "shop", "app")
		c.UID = "cert-uid"
		return c
	}
	request := func(owner *cmapi.Certificate) *cmapi.CertificateRequest {
		return &cmapi.CertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "meshtls-app-1", Labels: map[string]string{ManagedByLabel: ManagedByValue},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "cert-manager.io/v1", Kind: "Certificate", Name: owner.Name, UID: owner.UID, Controller: ptr.To(true)}}},
			Spec: cmapi.CertificateRequestSpec{IssuerRef: owner.Spec.IssuerRef},
		}
	}
	if c := cert(); !RequestTrusted(mesh, request(c), c, true) {
		t.Fatal("a request of the operator's Certificate to the mesh issuer in a meshed namespace must count")
	}
	for _, tc := range []struct {
		name   string
		mutate func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (owner *cmapi.Certificate, meshed bool)
	}{
		{"no owner", func(*cmapi.CertificateRequest, *cmapi.Certificate) (*cmapi.Certificate, bool) { return nil, true }},
		{"a namespace that is not meshed", func(_ *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) { return c, false }},
		{"the request asks another issuer", func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			cr.Spec.IssuerRef = evil
			return c, true
		}},
		{"the Certificate asks another issuer", func(_ *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			c.Spec.IssuerRef = evil
			return c, true
		}},
		{"a Certificate someone else labelled, of another name", func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			c.Name = "root"
			cr.OwnerReferences[0].Name = "root"
			return c, true
		}},
		{"a Certificate without the ServiceAccount annotation", func(_ *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			c.Annotations = nil
			return c, true
		}},
		{"a Certificate without the label", func(_ *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			c.Labels = nil
			return c, true
		}},
		{"a Certificate of another namespace", func(_ *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			c.Namespace = "other"
			return c, true
		}},
		{"an owner reference to another UID", func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			cr.OwnerReferences[0].UID = "other"
			return c, true
		}},
		{"an owner reference that is not the controller", func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			cr.OwnerReferences[0].Controller = nil
			return c, true
		}},
		{"an owner of another kind", func(cr *cmapi.CertificateRequest, c *cmapi.Certificate) (*cmapi.Certificate, bool) {
			cr.OwnerReferences[0].Kind = "Issuer"
			return c, true
		}},
	} {
		c := cert()
		cr := request(c)
		owner, meshed := tc.mutate(cr, c)
		if RequestTrusted(mesh, cr, owner, meshed) {
			t.Errorf("%s: the request must not count", tc.name)
		}
	}
}
