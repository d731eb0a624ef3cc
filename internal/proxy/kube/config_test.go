package kube

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

func TestKubeconfig(t *testing.T) {
	ca := testpki.MustCA("api")
	client := ca.MustIssue("", testpki.WithDNSNames("admin"))
	var gotAuth, gotCert string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		gotCert = ""
		if len(r.TLS.PeerCertificates) > 0 {
			gotCert = r.TLS.PeerCertificates[0].DNSNames[0]
		}
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	serverCA := srv.Certificate()
	caPEM := pemCert(serverCA.Raw)

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.crt", string(caPEM))
	write("token", "token-from-file\n")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	kubeconfig := func(user string) string {
		return write("kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: test
contexts:
- name: other
  context: {cluster: nowhere, user: nobody}
- name: test
  context: {cluster: local, user: me}
clusters:
- name: local
  cluster: {server: %s, certificate-authority: ca.crt}
users:
- name: me
  user: %s
`, srv.URL, user))
	}
	get := func(t *testing.T, cfg *Config) string {
		t.Helper()
		hc, err := cfg.HTTPClient()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	t.Run("should send a token file's token, relative to the kubeconfig, over HTTP/2", func(t *testing.T) {
		cfg, err := FromKubeconfig(kubeconfig("{tokenFile: token}"))
		if err != nil {
			t.Fatal(err)
		}
		if proto := get(t, cfg); gotAuth != "Bearer token-from-file" || proto != "HTTP/2.0" {
			t.Fatalf("Authorization %q over %s", gotAuth, proto)
		}
	})
	t.Run("should present a client certificate given as data", func(t *testing.T) {
		cfg, err := FromKubeconfig(kubeconfig(fmt.Sprintf("{client-certificate-data: %s, client-key-data: %s}", b64(client.CertPEM), b64(client.KeyPEM))))
		if err != nil {
			t.Fatal(err)
		}
		get(t, cfg)
		if gotCert != "admin" || gotAuth != "" {
			t.Fatalf("client certificate %q, Authorization %q", gotCert, gotAuth)
		}
	})
	t.Run("should refuse exec plugins with a clear error", func(t *testing.T) {
		_, err := FromKubeconfig(kubeconfig("{exec: {command: aws}}"))
		if err == nil || !strings.Contains(err.Error(), "does not run") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("should read the in-cluster token and CA beside it", func(t *testing.T) {
		host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
		t.Setenv("KUBERNETES_SERVICE_HOST", host)
		t.Setenv("KUBERNETES_SERVICE_PORT", port)
		cfg, err := InCluster(filepath.Join(dir, "token"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.CAFile != filepath.Join(dir, "ca.crt") {
			t.Fatalf("CA file %s", cfg.CAFile)
		}
		get(t, cfg)
		if gotAuth != "Bearer token-from-file" {
			t.Fatalf("Authorization %q", gotAuth)
		}
	})
}

func pemCert(der []byte) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END CERTIFICATE-----\n")
}
