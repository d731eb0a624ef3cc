package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Material is the pod's certificate and trust bundle as one consistent snapshot.
// A nil field means "not there (yet)"; the matching error says why when something
// was there but could not be used.
type Material struct {
	// Certificate is the pod's certificate chain and key, Leaf parsed.
	Certificate *tls.Certificate
	// CertificateErr says why Certificate is nil when files were there but unusable.
	CertificateErr error
	// Roots are the trust anchors of the mesh.
	Roots *x509.CertPool
	// RootsErr says why Roots is nil when a bundle was there but unusable.
	RootsErr error
	// Version counts changes; a Source never hands out two different snapshots with
	// the same Version.
	Version uint64
}

// Source hands out the pod's current certificate and trust bundle and tells
// subscribers when they change: rotation is pushed, never polled by the data path.
// The proxy reads Current once per change and publishes what it builds from it with
// one pointer swap.
type Source interface {
	// Current returns the latest snapshot; never nil.
	Current() *Material
	// Subscribe returns a channel that receives a value after every change
	// (coalesced: one pending value at most).
	Subscribe() <-chan struct{}
}

// broadcaster is the subscription half shared by the sources.
type broadcaster struct {
	mu   sync.Mutex
	cur  *Material
	subs []chan struct{}
}

func (b *broadcaster) Current() *Material {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return &Material{}
	}
	return b.cur
}

func (b *broadcaster) Subscribe() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{}, 1)
	b.subs = append(b.subs, ch)
	return ch
}

func (b *broadcaster) publish(m Material) {
	b.mu.Lock()
	if b.cur != nil {
		m.Version = b.cur.Version + 1
	} else {
		m.Version = 1
	}
	b.cur = &m
	subs := b.subs
	b.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// MemorySource is a Source set by hand: tests, and embedding the proxy.
type MemorySource struct{ broadcaster }

// Set publishes a certificate (nil: none) and a PEM trust bundle (nil: none).
func (s *MemorySource) Set(cert *tls.Certificate, bundlePEM []byte) {
	m := Material{Certificate: cert}
	if cert != nil && cert.Leaf == nil && len(cert.Certificate) > 0 {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			m.Certificate, m.CertificateErr = nil, err
		} else {
			c := *cert
			c.Leaf = leaf
			m.Certificate = &c
		}
	}
	if bundlePEM != nil {
		m.Roots, m.RootsErr = parseBundle(bundlePEM)
	}
	s.publish(m)
}

// File names inside the mounted volumes: a cert-manager Secret (kubernetes.io/tls)
// and the meshtls-trust-bundle ConfigMap.
const (
	CertFile   = "tls.crt"
	KeyFile    = "tls.key"
	BundleFile = "ca.crt"
)

// FileSource reads the certificate from CertDir (tls.crt, tls.key) and the trust
// bundle from TrustDir (ca.crt). The kubelet updates those volumes by writing a new
// directory and swapping the ..data symlink in one rename, so a read through the
// file names sees either the old set or the new one. FileSource watches both
// directories (inotify) for that swap and, as a safety net for events lost or
// directories that appear late, re-reads them every Resync. A snapshot is published
// only when the bytes changed. A certificate whose key does not match, or a bundle
// that does not parse, leaves the previous usable value in place and is reported in
// the snapshot's errors.
type FileSource struct {
	broadcaster
	CertDir, TrustDir string
	Resync            time.Duration
	Log               *slog.Logger

	certSum, bundleSum [32]byte
	loaded             bool
}

// NewFileSource reads the directories once, so that Current is meaningful before
// Run starts.
func NewFileSource(certDir, trustDir string, log *slog.Logger) *FileSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &FileSource{CertDir: certDir, TrustDir: trustDir, Resync: 30 * time.Second, Log: log}
	s.reload()
	return s
}

// Run watches the directories until ctx ends.
func (s *FileSource) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.Log.Warn("inotify unavailable; polling the certificate and bundle directories", "every", s.Resync, "err", err)
	} else {
		defer w.Close()
	}
	watched := map[string]bool{}
	watch := func() {
		if w == nil {
			return
		}
		for _, d := range []string{s.CertDir, s.TrustDir} {
			if d == "" || watched[d] {
				continue
			}
			if err := w.Add(d); err == nil {
				watched[d] = true
			}
		}
	}
	watch()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	tick := time.NewTicker(s.Resync)
	defer tick.Stop()
	// Events come in bursts (the kubelet writes a directory, a symlink, renames):
	// settle briefly before reading.
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			if settle == nil {
				settle = time.After(20 * time.Millisecond)
			}
		case err := <-errs:
			s.Log.Warn("watching the certificate directories failed", "err", err)
		case <-settle:
			settle = nil
			s.reload()
		case <-tick.C:
			watch()
			s.reload()
		}
	}
}

// reload reads the files and publishes a snapshot when they changed.
func (s *FileSource) reload() {
	certPEM, certErr := os.ReadFile(filepath.Join(s.CertDir, CertFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(s.CertDir, KeyFile))
	bundlePEM, bundleErr := os.ReadFile(filepath.Join(s.TrustDir, BundleFile))
	certSum := sha256.Sum256(append(append([]byte{}, certPEM...), keyPEM...))
	bundleSum := sha256.Sum256(bundlePEM)
	if s.loaded && certSum == s.certSum && bundleSum == s.bundleSum {
		return
	}
	s.loaded, s.certSum, s.bundleSum = true, certSum, bundleSum
	prev := s.Current()
	m := Material{Certificate: prev.Certificate, Roots: prev.Roots}

	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		// Not issued yet (the Secret volume is optional), or deleted: no certificate.
		m.Certificate = nil
	case certErr != nil || keyErr != nil:
		m.CertificateErr = fmt.Errorf("failed to read %s and %s in %s: %w", CertFile, KeyFile, s.CertDir, errors.Join(certErr, keyErr))
	default:
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			m.CertificateErr = fmt.Errorf("%s and %s in %s: %w", CertFile, KeyFile, s.CertDir, err)
		} else {
			m.Certificate = &cert
		}
	}
	switch {
	case errors.Is(bundleErr, os.ErrNotExist):
		m.Roots = nil
	case bundleErr != nil:
		m.RootsErr = fmt.Errorf("failed to read %s in %s: %w", BundleFile, s.TrustDir, bundleErr)
	default:
		roots, err := parseBundle(bundlePEM)
		if err != nil {
			m.RootsErr = fmt.Errorf("%s in %s: %w", BundleFile, s.TrustDir, err)
		} else {
			m.Roots = roots
		}
	}
	if m.CertificateErr != nil {
		s.Log.Warn("keeping the previous certificate", "err", m.CertificateErr)
	}
	if m.RootsErr != nil {
		s.Log.Warn("keeping the previous trust bundle", "err", m.RootsErr)
	}
	s.publish(m)
}

// parseBundle parses PEM CA certificates; it refuses a bundle with no certificate
// (an empty bundle would silently trust nobody, which is safe but never intended).
func parseBundle(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := bytes.TrimSpace(b); len(rest) > 0; {
		var der []byte
		var err error
		der, rest, err = nextPEMCertificate(rest)
		if err != nil {
			return nil, err
		}
		if der == nil {
			break
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the bundle: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("the trust bundle holds no PEM certificate")
	}
	return pool, nil
}
