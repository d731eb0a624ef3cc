// Package testpki makes certificates for the proxy's tests and benchmarks: a CA,
// SPIFFE leaves with exactly the defects a test wants (two URI SANs, no
// digitalSignature, a CA as leaf, expired...), and files laid out the way the kubelet
// writes a Secret or ConfigMap volume (the ..data symlink swap). It is for tests only:
// keys are ECDSA P-256 and nothing is protected.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a self-signed certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA makes a self-signed ECDSA P-256 root named name, valid from an hour ago for
// a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// MustCA is NewCA that panics.
func MustCA(name string) *CA {
	ca, err := NewCA(name)
	if err != nil {
		panic(err)
	}
	return ca
}

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	TLS     tls.Certificate
}

// Option changes a leaf's template before it is signed.
type Option func(*x509.Certificate)

// WithURIs replaces the URI SANs (the default is the one ID given to Issue).
func WithURIs(uris ...string) Option {
	return func(c *x509.Certificate) {
		c.URIs = nil
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				panic(err)
			}
			c.URIs = append(c.URIs, parsed)
		}
	}
}

// WithKeyUsage replaces the key usage (default digitalSignature).
func WithKeyUsage(ku x509.KeyUsage) Option { return func(c *x509.Certificate) { c.KeyUsage = ku } }

// WithExtKeyUsage replaces the extended key usages (default serverAuth, clientAuth).
func WithExtKeyUsage(eku ...x509.ExtKeyUsage) Option {
	return func(c *x509.Certificate) { c.ExtKeyUsage = eku }
}

// AsCA marks the leaf CA:TRUE (what a leaf must never be).
func AsCA() Option {
	return func(c *x509.Certificate) {
		c.IsCA, c.BasicConstraintsValid = true, true
		c.KeyUsage |= x509.KeyUsageCertSign
	}
}

// ValidBetween sets the validity period.
func ValidBetween(notBefore, notAfter time.Time) Option {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// WithDNSNames adds DNS SANs.
func WithDNSNames(names ...string) Option {
	return func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, names...) }
}

// WithIPAddresses adds IP SANs (for clients that check the server's address, like
// ghostunnel's client mode).
func WithIPAddresses(ips ...net.IP) Option {
	return func(c *x509.Certificate) { c.IPAddresses = append(c.IPAddresses, ips...) }
}

// Issue signs a leaf for the SPIFFE ID id with what cert-manager puts in a meshtls
// workload certificate (one URI SAN, digitalSignature, serverAuth and clientAuth),
// changed by opts.
func (ca *CA) Issue(id string, opts ...Option) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if id != "" {
		WithURIs(id)(tmpl)
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	l := &Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	l.TLS = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
	return l, nil
}

// MustIssue is Issue that panics.
func (ca *CA) MustIssue(id string, opts ...Option) *Leaf {
	l, err := ca.Issue(id, opts...)
	if err != nil {
		panic(err)
	}
	return l
}

// WriteCertDir writes the leaf as a cert-manager Secret volume would hold it
// (tls.crt, tls.key, ca.crt), with the kubelet's atomic swap.
func (l *Leaf) WriteCertDir(dir string, ca *CA) error {
	return AtomicWrite(dir, map[string][]byte{"tls.crt": l.CertPEM, "tls.key": l.KeyPEM, "ca.crt": ca.CertPEM})
}

// WriteFiles writes tls.crt and tls.key as plain files into dir, for tools like
// openssl and curl.
func (l *Leaf) WriteFiles(dir string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, l.CertPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, l.KeyPEM, 0o600)
}

// AtomicWrite replaces the files of dir the way the kubelet updates a Secret or
// ConfigMap volume: the files go into a fresh timestamped directory, a ..data_tmp
// symlink to it is renamed over ..data in one step, and each file name is a symlink
// to ..data/<name>. A reader following the names sees the old set or the new one,
// never a mix. The previous timestamped directory is removed, as the kubelet does.
func AtomicWrite(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts, err := os.MkdirTemp(dir, ".."+time.Now().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	// Readable by the pod's other users, as the kubelet's volumes are.
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join("..data", name) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n
}
