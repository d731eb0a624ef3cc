package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Health serves the proxy's health port (15021):
//
//	/healthz                         the process is alive
//	/readyz                          a configuration is applied and, where a port is STRICT, the certificate is usable
//	/app-health/<container>/<kind>   the application's original probe, run against it on localhost
//
// Injection rewrites the application's HTTP and TCP probes to the last form, so that
// the kubelet's probes work even when the application's ports are STRICT (the
// kubelet has no mesh certificate).
type Health struct {
	Proxy *Proxy
	// Probes are the application's original probes, keyed "<container>/<kind>".
	Probes map[string]AppProbe
	// Host is where the application listens (127.0.0.1).
	Host string
	// Log receives why an application probe failed; nil: the proxy's log.
	Log *slog.Logger
}

func (h *Health) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return h.Proxy.opts.Log
}

// AppProbe is the part of a Kubernetes probe the proxy runs: the handler and its
// timeout. The kubelet keeps the period, thresholds and initial delay on the
// rewritten probe.
type AppProbe struct {
	HTTPGet *struct {
		Path        string    `json:"path,omitempty"`
		Port        PortValue `json:"port"`
		Host        string    `json:"host,omitempty"`
		Scheme      string    `json:"scheme,omitempty"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders,omitempty"`
	} `json:"httpGet,omitempty"`
	TCPSocket *struct {
		Port PortValue `json:"port"`
		Host string    `json:"host,omitempty"`
	} `json:"tcpSocket,omitempty"`
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// ParseProbes parses the original probes as injection passes them
// (MESHTLS_ORIGINAL_PROBES: the JSON of the meshtls.io/original-probes annotation,
// named ports resolved to numbers).
func ParseProbes(s string) (map[string]AppProbe, error) {
	out := map[string]AppProbe{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("the original probes are not the JSON injection writes: %w", err)
	}
	for key, p := range out {
		var port PortValue
		switch {
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
		default:
			return nil, fmt.Errorf("original probe %s: neither httpGet nor tcpSocket", key)
		}
		if port.Name != "" || port.Number < 1 || port.Number > 65535 {
			return nil, fmt.Errorf("original probe %s: port %s is not a port number (named ports must be resolved by injection)", key, port)
		}
	}
	return out, nil
}

// ServeHTTP implements http.Handler.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz":
		_, _ = io.WriteString(w, "ok\n")
	case r.URL.Path == "/readyz":
		if ok, why := h.Proxy.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	case strings.HasPrefix(r.URL.Path, "/app-health/"):
		key := strings.TrimPrefix(r.URL.Path, "/app-health/")
		p, ok := h.Probes[key]
		if !ok {
			http.Error(w, "no original probe "+key, http.StatusNotFound)
			return
		}
		if err := h.run(r.Context(), p); err != nil {
			// The details (addresses, the application's answer) go to the log,
			// not to whoever can reach the health port.
			h.log().Info("application probe failed", "probe", key, "err", err)
			http.Error(w, "probe "+key+" failed", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	default:
		http.NotFound(w, r)
	}
}

// run runs a probe as the kubelet would: TCP connects; HTTP GETs and succeeds on a
// status from 200 to 399 (redirects are not followed: a 3xx is success, as for the
// kubelet's redirects to another host); HTTPS does not verify the certificate.
func (h *Health) run(ctx context.Context, p AppProbe) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if p.TCPSocket != nil {
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(p.TCPSocket.Port.Number)))
		if err != nil {
			return err
		}
		return c.Close()
	}
	g := p.HTTPGet
	if g.Host != "" {
		host = g.Host
	}
	scheme := "http"
	if strings.EqualFold(g.Scheme, "HTTPS") {
		scheme = "https"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(g.Port.Number))+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/meshtls")
	req.Header.Set("Accept", "*/*")
	for _, hd := range g.HTTPHeaders {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// PortValue is a probe's port: a number, or a name (an intstr.IntOrString).
type PortValue struct {
	Number int
	Name   string
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *PortValue) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.Name)
	}
	return json.Unmarshal(b, &p.Number)
}

// MarshalJSON implements json.Marshaler.
func (p PortValue) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(p.Number)
}

func (p PortValue) String() string {
	if p.Name != "" {
		return strconv.Quote(p.Name)
	}
	return strconv.Itoa(p.Number)
}

var probeClient = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's probes
		DisableKeepAlives: true,
		Proxy:             nil,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
