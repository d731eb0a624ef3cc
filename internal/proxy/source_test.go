package proxy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	certDir, trustDir := filepath.Join(dir, "certs"), filepath.Join(dir, "trust")
	ca := testpki.MustCA("mesh")
	first := ca.MustIssue(serverID)

	src := NewFileSource(certDir, trustDir, nil)
	src.Resync = 50 * time.Millisecond
	if m := src.Current(); m.Certificate != nil || m.Roots != nil {
		t.Fatal("material out of nothing")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := src.Subscribe()
	go func() { _ = src.Run(ctx) }()

	wait := func(what string, cond func(*Material) bool) {
		t.Helper()
		deadline := time.After(3 * time.Second)
		for !cond(src.Current()) {
			select {
			case <-updates:
			case <-deadline:
				t.Fatalf("%s: not seen in 3s", what)
			}
		}
	}

	t.Run("should load a Secret and a ConfigMap that appear after start", func(t *testing.T) {
		if err := first.WriteCertDir(certDir, ca); err != nil {
			t.Fatal(err)
		}
		if err := testpki.AtomicWrite(trustDir, map[string][]byte{"ca.crt": ca.CertPEM}); err != nil {
			t.Fatal(err)
		}
		wait("the first certificate", func(m *Material) bool {
			return m.Certificate != nil && m.Roots != nil && m.Certificate.Leaf.SerialNumber.Cmp(first.Cert.SerialNumber) == 0
		})
	})
	t.Run("should follow the kubelet's ..data swap", func(t *testing.T) {
		second := ca.MustIssue(serverID)
		if err := second.WriteCertDir(certDir, ca); err != nil {
			t.Fatal(err)
		}
		wait("the renewed certificate", func(m *Material) bool {
			return m.Certificate != nil && m.Certificate.Leaf.SerialNumber.Cmp(second.Cert.SerialNumber) == 0
		})
	})
	t.Run("should keep the previous certificate when the new key does not match", func(t *testing.T) {
		before := src.Current()
		other := ca.MustIssue(serverID)
		if err := testpki.AtomicWrite(certDir, map[string][]byte{"tls.crt": other.CertPEM, "tls.key": first.KeyPEM}); err != nil {
			t.Fatal(err)
		}
		wait("the error", func(m *Material) bool { return m.CertificateErr != nil })
		m := src.Current()
		if m.Certificate == nil || m.Certificate.Leaf.SerialNumber.Cmp(before.Certificate.Leaf.SerialNumber) != 0 {
			t.Fatal("the previous certificate was dropped")
		}
	})
	t.Run("should refuse a bundle without certificates and keep the previous one", func(t *testing.T) {
		if err := testpki.AtomicWrite(trustDir, map[string][]byte{"ca.crt": []byte("not a PEM\n")}); err != nil {
			t.Fatal(err)
		}
		wait("the error", func(m *Material) bool { return m.RootsErr != nil })
		if src.Current().Roots == nil {
			t.Fatal("the previous bundle was dropped")
		}
	})
	t.Run("should drop the certificate when the Secret goes away", func(t *testing.T) {
		if err := os.RemoveAll(certDir); err != nil {
			t.Fatal(err)
		}
		wait("no certificate", func(m *Material) bool { return m.Certificate == nil })
	})
}
