package identity

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 240)
	tests := map[string]struct {
		sa               string
		wantCert, wantSe string
		hashed           bool
	}{
		"should name short accounts meshtls-<sa> and meshtls-<sa>-tls": {
			sa: "finance", wantCert: "meshtls-finance", wantSe: "meshtls-finance-tls"},
		"should keep the plain names up to the 253-character limit": {
			sa: strings.Repeat("b", 241), wantCert: "meshtls-" + strings.Repeat("b", 241), wantSe: "meshtls-" + strings.Repeat("b", 241) + "-tls"},
		"should hash names that would exceed 253 characters": {
			sa: long + "-xyz", hashed: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cert, secret := CertificateName(tc.sa), CertificateSecretName(tc.sa)
			if NameHashed(tc.sa) != tc.hashed {
				t.Fatalf("NameHashed = %v, want %v", !tc.hashed, tc.hashed)
			}
			if !tc.hashed && (cert != tc.wantCert || secret != tc.wantSe) {
				t.Fatalf("got %s and %s, want %s and %s", cert, secret, tc.wantCert, tc.wantSe)
			}
			if secret != cert+"-tls" {
				t.Fatalf("the secret %s is not the certificate %s plus -tls", secret, cert)
			}
			for _, n := range []string{cert, secret} {
				if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
					t.Fatalf("%s is not a valid object name: %v", n, errs)
				}
			}
		})
	}
}

func TestHashedNamesKeepLongAccountsApart(t *testing.T) {
	a := strings.Repeat("x", 250) + "a"
	b := strings.Repeat("x", 250) + "b"
	if CertificateName(a) == CertificateName(b) {
		t.Fatalf("two accounts with a long common prefix share the name %s", CertificateName(a))
	}
	if !strings.HasPrefix(CertificateName(a), "meshtls-xxxx") || len(CertificateSecretName(a)) > 253 {
		t.Fatalf("unexpected hashed name %s (%d characters)", CertificateSecretName(a), len(CertificateSecretName(a)))
	}
}

func TestHashedNamesEndTheCutAfterALetterOrDigit(t *testing.T) {
	// The cut falls right after the dots: the stem must not end in "." before "-<hash>".
	sa := strings.Repeat("a", 223) + "......" + strings.Repeat("b", 30)
	name := CertificateSecretName(sa)
	if strings.Contains(name, ".-") {
		t.Fatalf("%s has a label ending in '.'", name)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		t.Fatalf("%s: %v", name, errs)
	}
}
