package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy/testpki"
)

// TestProxyInteropOpenSSLAndCurl checks a STRICT port with clients nobody here
// wrote: openssl s_client (against an echo application) and curl (against an HTTP
// application), with the mesh's certificate and with each kind of certificate the
// proxy must refuse. ghostunnel with --allow-uri accepts the other trust domain,
// two URI SANs, the CA as leaf and the missing digitalSignature; the proxy must not.
func TestProxyInteropOpenSSLAndCurl(t *testing.T) {
	for _, tool := range []string{"openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (apt-get install openssl curl): %v", tool, err)
		}
	}
	pki := newMeshPKI(t, e2eServerID)
	echoPort, httpPort := echoServer(t), httpApp(t)
	echoAddr, httpAddr := freeAddr(t), freeAddr(t)
	p := startProxy(t, "--config="+configFile(t, "STRICT", nil), "--cert-dir="+pki.certDir, "--trust-dir="+pki.trustDir,
		"--inbound-listen="+echoAddr+"="+strconv.Itoa(echoPort), "--inbound-listen="+httpAddr+"="+strconv.Itoa(httpPort))
	waitReady(t, p)

	now := time.Now()
	other := testpki.MustCA("another mesh")
	cases := []struct {
		name   string
		leaf   *testpki.Leaf // nil: no client certificate
		tls12  bool
		accept bool
		why    string // what the proxy logs when it refuses
	}{
		{name: "the mesh's certificate", leaf: pki.client, accept: true},
		{name: "no certificate", why: "client didn't provide a certificate"},
		{name: "a certificate from another CA", leaf: other.MustIssue(e2eClientID), why: "does not chain to the trust bundle"},
		{name: "a SPIFFE ID from another trust domain", leaf: pki.ca.MustIssue("spiffe://example.org/ns/shop/sa/frontend"), why: "is not in the trust domain"},
		{name: "an expired certificate", leaf: pki.ca.MustIssue(e2eClientID, testpki.ValidBetween(now.Add(-48*time.Hour), now.Add(-time.Hour))), why: "has expired"},
		{name: "two URI SANs", leaf: pki.ca.MustIssue("", testpki.WithURIs(e2eClientID, "spiffe://cluster.local/ns/shop/sa/admin")), why: "exactly one URI SAN, it has 2"},
		{name: "a CA certificate as leaf", leaf: pki.ca.MustIssue(e2eClientID, testpki.AsCA()), why: "is a CA"},
		{name: "no digitalSignature key usage", leaf: pki.ca.MustIssue(e2eClientID, testpki.WithKeyUsage(x509.KeyUsageKeyAgreement)), why: "lacks the digitalSignature key usage"},
		{name: "TLS 1.2", leaf: pki.client, tls12: true, why: "unsupported versions"},
	}
	refusals := 0
	for _, tc := range cases {
		var certFile, keyFile string
		if tc.leaf != nil {
			var err error
			if certFile, keyFile, err = tc.leaf.WriteFiles(t.TempDir()); err != nil {
				t.Fatal(err)
			}
		}
		t.Run("openssl s_client with "+tc.name, func(t *testing.T) {
			args := []string{"s_client", "-connect", echoAddr, "-quiet"}
			if certFile != "" {
				args = append(args, "-cert", certFile, "-key", keyFile)
			}
			if tc.tls12 {
				args = append(args, "-tls1_2")
			}
			out, echoed := opensslEcho(t, args)
			if echoed != tc.accept {
				t.Fatalf("accepted=%v, want %v; openssl said:\n%s", echoed, tc.accept, out)
			}
			t.Logf("openssl said:\n%s", tail(out, 3))
		})
		t.Run("curl with "+tc.name, func(t *testing.T) {
			args := []string{"-sS", "-k", "--max-time", "5", "https://" + httpAddr + "/"}
			if certFile != "" {
				args = append(args, "--cert", certFile, "--key", keyFile)
			}
			if tc.tls12 {
				args = append(args, "--tls-max", "1.2")
			}
			out, err := exec.Command("curl", args...).CombinedOutput()
			got := err == nil && strings.Contains(string(out), "hello from the app")
			if got != tc.accept {
				t.Fatalf("accepted=%v, want %v; curl said: %v\n%s", got, tc.accept, err, out)
			}
		})
		if !tc.accept {
			refusals += 2
			if log := readFile(t, p.log); strings.Count(log, tc.why) < 2 {
				t.Errorf("%s: want the proxy to log %q for both clients; its log ends:\n%s", tc.name, tc.why, tail(log, 4))
			}
		}
	}
	// Every refusal is a handshake failure in the proxy's own numbers.
	if got := p.metric(t, "meshtls_proxy_connections_total", `result="handshake_failure"`); got != float64(refusals) {
		t.Errorf("meshtls_proxy_connections_total{result=handshake_failure} = %v, want %d", got, refusals)
	}
	if got := p.metric(t, "meshtls_proxy_connections_total", `result="mtls"`); got != 2 {
		t.Errorf("meshtls_proxy_connections_total{result=mtls} = %v, want 2", got)
	}
}

// opensslEcho runs s_client, sends a line, and reports whether the echo
// application's answer came back through the proxy.
func opensslEcho(t *testing.T, args []string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const ping = "ping-through-the-proxy"
	fmt.Fprintln(stdin, ping)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Success: the line comes back (s_client keeps the connection open); refusal:
	// s_client exits on the server's alert.
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-done:
			return out.String(), strings.Count(out.String(), ping) > 0
		case <-deadline:
			_ = stdin.Close()
			_ = cmd.Process.Kill()
			<-done
			return out.String(), strings.Count(out.String(), ping) > 0
		case <-time.After(50 * time.Millisecond):
			if strings.Contains(out.String(), ping) {
				_ = stdin.Close()
				_ = cmd.Process.Kill()
				<-done
				return out.String(), true
			}
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitReady waits for the proxy's /readyz.
func waitReady(t *testing.T, p *proxyProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := p.get("/readyz")
		if code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshtls-proxy not ready within 10s: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
