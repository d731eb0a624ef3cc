package identity

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

func TestParseCAs(t *testing.T) {
	a, b := newTestCA(t, "root a"), newTestCA(t, "root b")
	leaf := leafPEM(a.leaf(t, "spiffe://cluster.local/ns/x/sa/y"))
	tests := map[string]struct {
		in      string
		want    int
		wantErr string
	}{
		"should parse one CA":                          {in: a.pem, want: 1},
		"should parse two CAs with comments around":    {in: "# old root\n" + a.pem + "\n# new root\n" + b.pem + "trailing words", want: 2},
		"should refuse empty data":                     {in: "", wantErr: "no PEM CERTIFICATE block"},
		"should refuse text without PEM":               {in: "not a certificate", wantErr: "no PEM CERTIFICATE block"},
		"should refuse a leaf certificate":             {in: a.pem + leaf, wantErr: "certificate 2 (subject \"\", SHA-256 fingerprint"},
		"should refuse a private key and not quote it": {in: a.pem + "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n", wantErr: "PEM block 2 is a PRIVATE KEY"},
		"should refuse a broken certificate":           {in: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", wantErr: "PEM block 1 is not a valid X.509 certificate"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseCAs([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				if strings.Contains(err.Error(), "c2VjcmV0") {
					t.Fatal("the error quotes the data")
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %d certificates, err %v; want %d", len(got), err, tc.want)
			}
		})
	}
}

func TestEncodeBundleSortsAndDeduplicates(t *testing.T) {
	a, b := newTestCA(t, "root a"), newTestCA(t, "root b")
	ca, _ := ParseCAs([]byte(a.pem))
	cb, _ := ParseCAs([]byte(b.pem))
	one := EncodeBundle([]*x509.Certificate{cb[0], ca[0], cb[0]})
	two := EncodeBundle([]*x509.Certificate{ca[0], cb[0], ca[0]})
	if string(one) != string(two) {
		t.Fatal("the same set in another order gives other bytes")
	}
	if string(one) != a.pem+b.pem {
		t.Fatalf("want root a then root b, once each, got\n%s", one)
	}
}

func TestAssembleBundle(t *testing.T) {
	a, b := newTestCA(t, "root a"), newTestCA(t, "root b")
	leaf := leafPEM(a.leaf(t, "spiffe://cluster.local/ns/x/sa/y"))
	ref := "ConfigMap meshtls-system/mesh-roots, key ca.crt"
	str := func(s string) *string { return &s }
	tests := map[string]struct {
		in         BundleInput
		wantCAs    int
		wantReason string
		wantMsg    string
	}{
		"should wait for the first issued certificate": {
			in: BundleInput{}, wantReason: v1alpha1.ReasonWaitingForCA},
		"should say what to do when the issuer reports no CA": {
			in: BundleInput{Issued: 3, RequestCAs: []string{"", ""}}, wantReason: v1alpha1.ReasonNoCA, wantMsg: "set spec.trustBundle.configMapRef"},
		"should say so when status.ca holds no CA certificate": {
			in: BundleInput{Issued: 1, RequestCAs: []string{leaf}}, wantReason: v1alpha1.ReasonNoCA, wantMsg: "not CA certificates"},
		"should make the bundle from the distinct reported CAs": {
			in: BundleInput{Issued: 4, RequestCAs: []string{a.pem, b.pem, a.pem, a.pem}}, wantCAs: 2},
		"should use the trust bundle": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref, Found: true, Data: str(a.pem + b.pem)}}, wantCAs: 2},
		"should add the reported CAs to the trust bundle": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref, Found: true, Data: str(b.pem)}, RequestCAs: []string{a.pem}, Issued: 1}, wantCAs: 2},
		"should refuse a missing trust-bundle ConfigMap": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref}, RequestCAs: []string{a.pem}}, wantReason: v1alpha1.ReasonInvalidTrustBundle, wantMsg: "does not exist"},
		"should refuse a trust-bundle ConfigMap without the key": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref, Found: true}}, wantReason: v1alpha1.ReasonInvalidTrustBundle, wantMsg: "has no such key"},
		"should refuse a trust bundle without PEM": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref, Found: true, Data: str("hello")}, RequestCAs: []string{a.pem}}, wantReason: v1alpha1.ReasonInvalidTrustBundle, wantMsg: "no PEM CERTIFICATE block"},
		"should refuse a trust bundle with a non-CA certificate": {
			in: BundleInput{TrustBundle: &TrustBundleInput{Ref: ref, Found: true, Data: str(a.pem + leaf)}}, wantReason: v1alpha1.ReasonInvalidTrustBundle, wantMsg: "is not a CA certificate"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := AssembleBundle(tc.in)
			if got.Reason != tc.wantReason || got.CAs != tc.wantCAs || !strings.Contains(got.Message, tc.wantMsg) {
				t.Fatalf("got reason %q, %d CAs, message %q; want %q, %d, containing %q", got.Reason, got.CAs, got.Message, tc.wantReason, tc.wantCAs, tc.wantMsg)
			}
			if (got.PEM == nil) != (tc.wantReason != "") {
				t.Fatalf("a bundle must come exactly when there is no reason; got %d bytes", len(got.PEM))
			}
			if tc.wantReason == v1alpha1.ReasonInvalidTrustBundle && !strings.Contains(got.Message, ref) {
				t.Fatalf("the message must name the ConfigMap: %s", got.Message)
			}
		})
	}
}

// TestRootRotation walks a root rotation as the operator sees it: the inputs at each
// step (the trust bundle the user sets, the CAs of the certificate requests that are
// current) and checks that every current leaf verifies against the bundle of that step.
func TestRootRotation(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old root"), newTestCA(t, "new root")
	ids := []string{"spiffe://cluster.local/ns/a/sa/one", "spiffe://cluster.local/ns/b/sa/two", "spiffe://cluster.local/ns/c/sa/three"}
	str := func(s string) *string { return &s }
	tb := func(pems ...string) *TrustBundleInput {
		return &TrustBundleInput{Ref: "ConfigMap meshtls-system/mesh-roots, key ca.crt", Found: true, Data: str(strings.Join(pems, ""))}
	}
	type step struct {
		name    string
		trust   *TrustBundleInput
		signers []*testCA // the CA of each current leaf, by id
		wantCAs int
	}
	steps := []step{
		{"0: the old root issues, no trustBundle", nil, []*testCA{oldCA, oldCA, oldCA}, 1},
		{"1: trustBundle holds old and new", tb(oldCA.pem, newCA.pem), []*testCA{oldCA, oldCA, oldCA}, 2},
		{"2a: issuer switched, one leaf re-issued", tb(oldCA.pem, newCA.pem), []*testCA{newCA, oldCA, oldCA}, 2},
		{"2b: all re-issued", tb(oldCA.pem, newCA.pem), []*testCA{newCA, newCA, newCA}, 2},
		{"3a: old root removed too early: kept while a leaf uses it", tb(newCA.pem), []*testCA{newCA, oldCA, newCA}, 2},
		{"3b: old root removed, nothing uses it", tb(newCA.pem), []*testCA{newCA, newCA, newCA}, 1},
	}
	for _, s := range steps {
		in := BundleInput{TrustBundle: s.trust}
		var leaves []*x509.Certificate
		for i, ca := range s.signers {
			in.RequestCAs = append(in.RequestCAs, ca.pem)
			in.Issued++
			leaves = append(leaves, ca.leaf(t, ids[i]))
		}
		res := AssembleBundle(in)
		if res.PEM == nil || res.CAs != s.wantCAs {
			t.Fatalf("step %s: bundle of %d CAs (%s), want %d", s.name, res.CAs, res.Message, s.wantCAs)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(res.PEM)
		for i, l := range leaves {
			if _, err := l.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("step %s: leaf %d does not verify against the bundle: %v", s.name, i, err)
			}
		}
	}
}

func ExampleAssembleBundle() {
	res := AssembleBundle(BundleInput{Issued: 2})
	fmt.Println(res.Reason)
	// Output: NoCA
}
