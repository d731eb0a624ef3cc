package identity

import (
	"crypto/sha256"
	"encoding/hex"
)

// Naming of a ServiceAccount's Certificate and Secret.
//
// The Certificate is meshtls-<sa> and its Secret meshtls-<sa>-tls. A ServiceAccount
// name may be up to 253 characters (a DNS subdomain), so these can exceed the 253
// characters of an object name. When the Secret's name would, both names take a stem
// of at most 232 characters instead: meshtls-<the first characters of sa>-<16 hex
// digits of the SHA-256 of the whole ServiceAccount name>, cut after a letter or
// digit so the result stays a DNS subdomain. The hash keeps two long ServiceAccounts
// that share a prefix apart; the Certificate also records its ServiceAccount in an
// annotation, so even a crafted collision is refused rather than shared (see Owned).
const (
	namePrefix       = "meshtls-"
	secretSuffix     = "-tls"
	maxObjectName    = 253 // a DNS subdomain: the name limit of Certificates and Secrets
	nameHashHexChars = 16
)

// CertificateName is the cert-manager Certificate of a ServiceAccount.
func CertificateName(serviceAccount string) string { return nameStem(serviceAccount) }

// CertificateSecretName is the Secret that Certificate writes.
func CertificateSecretName(serviceAccount string) string {
	return nameStem(serviceAccount) + secretSuffix
}

// NameHashed reports whether a ServiceAccount's names carry the hash suffix.
func NameHashed(serviceAccount string) bool {
	return len(namePrefix)+len(serviceAccount)+len(secretSuffix) > maxObjectName
}

func nameStem(serviceAccount string) string {
	full := namePrefix + serviceAccount
	if !NameHashed(serviceAccount) {
		return full
	}
	sum := sha256.Sum256([]byte(serviceAccount))
	hash := hex.EncodeToString(sum[:])[:nameHashHexChars]
	keep := maxObjectName - len(secretSuffix) - 1 - nameHashHexChars
	prefix := full[:keep]
	// A DNS subdomain's labels end in a letter or digit: "meshtls-a.-<hash>" is not one.
	for len(prefix) > len(namePrefix) && !alphanumeric(prefix[len(prefix)-1]) {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix + "-" + hash
}

func alphanumeric(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}
