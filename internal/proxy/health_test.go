package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestHealth(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "yes" || r.Host != "app.local" {
			http.Error(w, "headers not passed", http.StatusBadRequest)
		}
	})
	app.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	appLn := listen(t)
	go func() { _ = http.Serve(appLn, app) }()
	port := itoa(appLn.Addr().(*net.TCPAddr).Port)

	probes, err := ParseProbes(`{
		"app/liveness":  {"httpGet": {"path": "/ok", "port": ` + port + `, "httpHeaders": [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "app.local"}]}, "periodSeconds": 3},
		"app/readiness": {"httpGet": {"path": "/fail", "port": ` + port + `}},
		"app/startup":   {"tcpSocket": {"port": ` + port + `}, "timeoutSeconds": 2},
		"db/startup":    {"tcpSocket": {"port": 1}}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil)
	var logs syncBuffer
	srv := httptest.NewServer(&Health{Proxy: h.p, Probes: probes, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	for _, tc := range []struct {
		name, path string
		code       int
		body       string
		logged     string // the failure's details: in the log, never in the answer
	}{
		{"should be alive", "/healthz", 200, "ok", ""},
		{"should not be ready before a configuration", "/readyz", 503, "no PodProxyConfig applied yet", ""},
		{"should run an HTTP probe with its headers", "/app-health/app/liveness", 200, "ok", ""},
		{"should fail an HTTP probe that answers 500", "/app-health/app/readiness", 503, "probe app/readiness failed", "HTTP 500"},
		{"should run a TCP probe", "/app-health/app/startup", 200, "ok", ""},
		{"should fail a TCP probe on a closed port", "/app-health/db/startup", 503, "probe db/startup failed", "connection refused"},
		{"should not know a probe nobody rewrote", "/app-health/app/other", 404, "no original probe", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%s: want %d %q, got %d %q", tc.path, tc.code, tc.body, code, body)
			}
			if tc.logged != "" {
				if strings.Contains(body, tc.logged) {
					t.Fatalf("%s: the answer gives the failure's details away: %q", tc.path, body)
				}
				if !strings.Contains(logs.String(), tc.logged) {
					t.Fatalf("%s: want %q in the log, got %q", tc.path, tc.logged, logs.String())
				}
			}
		})
	}
	t.Run("should be ready once a configuration is applied and the certificate loaded", func(t *testing.T) {
		h.p.SetConfig(ppc("sha256:1", ModeStrict))
		if code, body := get("/readyz"); code != 200 {
			t.Fatalf("got %d %s", code, body)
		}
	})
	t.Run("should refuse probes with named ports", func(t *testing.T) {
		_, err := ParseProbes(`{"app/liveness": {"httpGet": {"path": "/", "port": "http"}}}`)
		mustContain(t, err, "named ports must be resolved")
	})
}

// syncBuffer is a bytes.Buffer safe for a handler and a test to share.
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

func TestReadyNeedsAValidCertificate(t *testing.T) {
	h := newHarness(t, nil)
	// A certificate that loads but names another workload: no peer accepts it.
	other := h.ca.MustIssue("spiffe://cluster.local/ns/shop/sa/other")
	h.src.Set(&other.TLS, h.ca.CertPEM)
	h.p.SetConfig(ppc("sha256:1", ModeStrict))
	waitFor(t, func() bool { st := h.p.state.Load(); return st.config != nil && st.server != nil })
	if ready, why := h.p.Ready(); ready {
		t.Fatal("ready on a STRICT port with another workload's certificate")
	} else if !strings.Contains(why, "valid certificate") {
		t.Fatalf("the reason does not say so: %q", why)
	}
	h.src.Set(&h.server.TLS, h.ca.CertPEM)
	waitFor(t, func() bool { ok, _ := h.p.Ready(); return ok })
}

func TestConfigWithoutPodUIDIsRejected(t *testing.T) {
	h := newHarness(t, nil) // the proxy knows its UID (POD_UID)
	obj := ppc("sha256:1", ModePermissive)
	obj.Spec.PodUID = ""
	h.p.SetConfig(obj)
	a := h.p.Applied()
	if a.Config != nil || !strings.Contains(a.Rejected, "spec.podUID is empty") {
		t.Fatalf("want the configuration rejected for its empty spec.podUID, got %+v", a)
	}
}
