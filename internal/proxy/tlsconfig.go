package proxy

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// DefaultKeyExchange is the proxy's default list of TLS 1.3 key-exchange groups:
// X25519, then P-256. Go's own default puts the hybrid post-quantum
// X25519MLKEM768 first, which roughly doubles the CPU of a handshake on both ends
// and adds about 1.1 KB to each hello; inside one cluster, over connections that
// carry short-lived workload certificates, the proxy does not pay that by default.
// Turn it on with --key-exchange=X25519MLKEM768,X25519,P-256 when recorded traffic
// must resist a future quantum computer (harvest now, decrypt later).
var DefaultKeyExchange = []tls.CurveID{tls.X25519, tls.CurveP256}

var groupNames = map[string]tls.CurveID{
	"x25519":             tls.X25519,
	"p-256":              tls.CurveP256,
	"p256":               tls.CurveP256,
	"curvep256":          tls.CurveP256,
	"secp256r1":          tls.CurveP256,
	"p-384":              tls.CurveP384,
	"p384":               tls.CurveP384,
	"curvep384":          tls.CurveP384,
	"secp384r1":          tls.CurveP384,
	"p-521":              tls.CurveP521,
	"p521":               tls.CurveP521,
	"curvep521":          tls.CurveP521,
	"secp521r1":          tls.CurveP521,
	"x25519mlkem768":     tls.X25519MLKEM768,
	"secp256r1mlkem768":  tls.SecP256r1MLKEM768,
	"secp384r1mlkem1024": tls.SecP384r1MLKEM1024,
}

// ParseKeyExchange parses a comma-separated list of group names in order of
// preference (X25519, P-256, P-384, P-521, X25519MLKEM768, SecP256r1MLKEM768,
// SecP384r1MLKEM1024; case-insensitive).
func ParseKeyExchange(s string) ([]tls.CurveID, error) {
	var out []tls.CurveID
	seen := map[tls.CurveID]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, ok := groupNames[strings.ToLower(f)]
		if !ok {
			return nil, fmt.Errorf("unknown key-exchange group %q (known: X25519, P-256, P-384, P-521, X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024)", f)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no key-exchange group in %q", s)
	}
	return out, nil
}

// serverConfig is the TLS configuration of inbound mTLS for one snapshot of
// certificate and trust bundle. It is built fresh for every snapshot, never cloned,
// so that each snapshot has its own session-ticket keys: a ticket issued before a
// reload cannot resume after it. verify runs on every handshake, full or resumed
// (crypto/tls skips VerifyPeerCertificate on resumption, not VerifyConnection), and
// checks against the trust bundle and trust domain current at that moment.
func serverConfig(cert *tls.Certificate, groups []tls.CurveID, verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{*cert},
		ClientAuth:       tls.RequireAnyClientCert,
		CurvePreferences: groups,
		VerifyConnection: verify,
	}
}

// clientConfig is the TLS configuration of outbound mTLS to one expected identity.
// Chain and name checks are VerifyPeer's, in VerifyConnection, so they run on
// resumed sessions too; InsecureSkipVerify only turns off crypto/tls's host-name
// check, which SPIFFE identities replace.
func clientConfig(cert *tls.Certificate, groups []tls.CurveID, verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{*cert},
		CurvePreferences:   groups,
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection checks the chain and the SPIFFE ID.
		VerifyConnection:   verify,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
}
