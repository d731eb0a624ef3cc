package identity

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParseWorkloadID hunts panics, and checks that whatever parses is a valid ID
// that prints back to the input and rebuilds through NewWorkloadID.
func FuzzParseWorkloadID(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/shop/sa/finance", "spiffe://a/ns/b/sa/c", "spiffe://x:1/ns/a/sa/b",
		"spiffe://u@x/ns/a/sa/b", "spiffe://x/ns/a/sa/b?q", "spiffe://x/ns/a/sa/b#f", "spiffe://x/ns/%2e/sa/b",
		"spiffe://x/ns/./sa/b", "SPIFFE://x/ns/a/sa/b", "", "spiffe://", "spiffe:///ns/a/sa/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseWorkloadID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("%q parsed to %+v, which prints as %q", s, id, id.String())
		}
		if len(s) > MaxIDLength || len(id.TrustDomain) > MaxTrustDomainLength {
			t.Fatalf("%q is over the SPIFFE limits", s)
		}
		if strings.ContainsAny(s[len("spiffe://"):], "?#%:@") {
			t.Fatalf("%q has a query, fragment, escape, port or userinfo", s)
		}
		again, err := NewWorkloadID(id.TrustDomain, id.Namespace, id.ServiceAccount)
		if err != nil || again != id {
			t.Fatalf("%q parsed but does not rebuild: %v", s, err)
		}
	})
}

// FuzzParseCAs hunts panics, and checks that everything it accepts is a CA.
func FuzzParseCAs(f *testing.F) {
	ca := newTestCA(f, "fuzz root")
	f.Add([]byte(ca.pem))
	f.Add([]byte(ca.pem + leafPEM(ca.leaf(f, "spiffe://x/ns/a/sa/b"))))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCAs(data)
		if err != nil {
			if len(certs) > 0 {
				t.Fatal("certificates returned with an error")
			}
			return
		}
		for _, c := range certs {
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Fatalf("accepted a certificate that is not a CA: %s", c.Subject)
			}
		}
		res := AssembleBundle(BundleInput{RequestCAs: []string{string(data)}, Issued: 1})
		if res.PEM == nil || res.CAs == 0 || res.CAs > len(certs) {
			t.Fatalf("a valid CA set did not assemble: %+v", res)
		}
	})
}

// FuzzNames checks that every ServiceAccount name Kubernetes accepts gives valid,
// bounded Certificate and Secret names.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"default", "a", strings.Repeat("a", 253), strings.Repeat("a.", 126) + "b", strings.Repeat("ab-", 84)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sa string) {
		if len(validation.IsDNS1123Subdomain(sa)) > 0 {
			return
		}
		for _, n := range []string{CertificateName(sa), CertificateSecretName(sa)} {
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Fatalf("service account %q gives the invalid name %q: %v", sa, n, errs)
			}
		}
		if !NameHashed(sa) && CertificateName(sa) != "meshtls-"+sa {
			t.Fatalf("a short name was changed: %s", CertificateName(sa))
		}
	})
}
