package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
	srv := httptest.NewServer(&Health{Proxy: h.p, Probes: probes})
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
	}{
		{"should be alive", "/healthz", 200, "ok"},
		{"should not be ready before a configuration", "/readyz", 503, "no PodProxyConfig applied yet"},
		{"should run an HTTP probe with its headers", "/app-health/app/liveness", 200, "ok"},
		{"should fail an HTTP probe that answers 500", "/app-health/app/readiness", 503, "HTTP 500"},
		{"should run a TCP probe", "/app-health/app/startup", 200, "ok"},
		{"should fail a TCP probe on a closed port", "/app-health/db/startup", 503, "connection refused"},
		{"should not know a probe nobody rewrote", "/app-health/app/other", 404, "no original probe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%s: want %d %q, got %d %q", tc.path, tc.code, tc.body, code, body)
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
