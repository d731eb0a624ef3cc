package kube

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is how the proxy reaches the API server.
type Config struct {
	// Host is the API server's URL (https://host:port).
	Host string
	// CAFile or CAData is the cluster CA; neither: the system roots.
	CAFile string
	CAData []byte
	// TokenFile is re-read every minute, as the kubelet rotates projected tokens;
	// Token is a fixed token.
	TokenFile string
	Token     string
	// A client certificate, as files or data.
	CertFile, KeyFile string
	CertData, KeyData []byte
	// Insecure skips verifying the API server (kubeconfig insecure-skip-tls-verify).
	Insecure bool
	// UserAgent of every request.
	UserAgent string
}

// InCluster is the configuration of a proxy in a pod: KUBERNETES_SERVICE_HOST and
// _PORT, the pod-bound token that injection projects at tokenFile, and the cluster
// CA projected beside it as ca.crt (falling back to the default service-account
// mount's, for pods injected before the CA was projected with the token).
func InCluster(tokenFile string) (*Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no --kubeconfig")
	}
	if tokenFile == "" {
		return nil, errors.New("no token file: set MESHTLS_TOKEN_FILE (injection does) or --token-file")
	}
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("the token file: %w", err)
	}
	ca := filepath.Join(filepath.Dir(tokenFile), "ca.crt")
	if _, err := os.Stat(ca); err != nil {
		ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	}
	return &Config{Host: "https://" + net.JoinHostPort(host, port), TokenFile: tokenFile, CAFile: ca}, nil
}

// kubeconfig is the part of a kubeconfig file the proxy understands.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server   string `json:"server"`
			CA       string `json:"certificate-authority"`
			CAData   []byte `json:"certificate-authority-data"`
			Insecure bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token        string `json:"token"`
			TokenFile    string `json:"tokenFile"`
			Cert         string `json:"client-certificate"`
			CertData     []byte `json:"client-certificate-data"`
			Key          string `json:"client-key"`
			KeyData      []byte `json:"client-key-data"`
			Exec         any    `json:"exec"`
			AuthProvider any    `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
}

// FromKubeconfig reads the current context of a kubeconfig file: its server, CA,
// and a token, token file or client certificate (exec and auth-provider plugins are
// not supported: the proxy is meant to run with its pod's token).
func FromKubeconfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
	}
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	var cluster, user string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			cluster, user = c.Context.Cluster, c.Context.User
		}
	}
	if cluster == "" {
		return nil, fmt.Errorf("--kubeconfig %s: no context %q", path, kc.CurrentContext)
	}
	cfg := &Config{}
	for _, c := range kc.Clusters {
		if c.Name == cluster {
			cfg.Host, cfg.CAFile, cfg.CAData, cfg.Insecure = c.Cluster.Server, rel(c.Cluster.CA), c.Cluster.CAData, c.Cluster.Insecure
		}
	}
	if cfg.Host == "" {
		return nil, fmt.Errorf("--kubeconfig %s: cluster %q has no server", path, cluster)
	}
	for _, u := range kc.Users {
		if u.Name != user {
			continue
		}
		if u.User.Exec != nil || u.User.AuthProvider != nil {
			return nil, fmt.Errorf("--kubeconfig %s: user %q uses an exec or auth-provider plugin, which meshtls-proxy does not run; use a token, tokenFile or client certificate", path, user)
		}
		cfg.Token, cfg.TokenFile = u.User.Token, rel(u.User.TokenFile)
		cfg.CertFile, cfg.CertData, cfg.KeyFile, cfg.KeyData = rel(u.User.Cert), u.User.CertData, rel(u.User.Key), u.User.KeyData
	}
	return cfg, nil
}

// HTTP/2 health checks: a ping after this long without a frame, and the
// connection closed when the ping gets no answer within h2PingTimeout. Variables
// so that a test can shorten them.
var (
	h2ReadIdleTimeout = 30 * time.Second
	h2PingTimeout     = 15 * time.Second
)

// HTTPClient returns a client that authenticates to the API server. It speaks
// HTTP/2, so that many watches (one process running many proxies' clients, in the
// benchmark) share a connection.
func (c *Config) HTTPClient() (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure} //nolint:gosec // only when the kubeconfig says so
	ca := c.CAData
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("the API server's CA: %w", err)
		}
		ca = b
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("the API server's CA holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	switch {
	case c.CertFile != "" || c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case len(c.CertData) > 0:
		cert, err := tls.X509KeyPair(c.CertData, c.KeyData)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 4,
		// A watch is a long-lived stream on a shared HTTP/2 connection: when the
		// connection dies silently (a NAT entry dropped, an API server gone away
		// without a FIN) nothing would ever arrive and the proxy would keep a stale
		// configuration. Health pings close a connection that stops answering.
		HTTP2: &http.HTTP2Config{SendPingTimeout: h2ReadIdleTimeout, PingTimeout: h2PingTimeout},
	}
	var rt http.RoundTripper = tr
	if c.Token != "" || c.TokenFile != "" {
		rt = &bearer{next: tr, token: c.Token, file: c.TokenFile}
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "meshtls-proxy"
	}
	return &http.Client{Transport: &userAgent{next: rt, ua: ua}}, nil
}

// bearer adds the token, re-reading a token file at most once a minute (the
// kubelet rewrites a projected token well before it expires).
type bearer struct {
	next  http.RoundTripper
	token string
	file  string

	mu   sync.Mutex
	read time.Time
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	token := b.token
	if b.file != "" {
		b.mu.Lock()
		if time.Since(b.read) > time.Minute || b.token == "" {
			if t, err := os.ReadFile(b.file); err == nil {
				b.token, b.read = strings.TrimSpace(string(t)), time.Now()
			} else if b.token == "" {
				b.mu.Unlock()
				return nil, fmt.Errorf("the token file: %w", err)
			}
		}
		token = b.token
		b.mu.Unlock()
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return b.next.RoundTrip(r)
}

type userAgent struct {
	next http.RoundTripper
	ua   string
}

func (u *userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("User-Agent") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("User-Agent", u.ua)
	}
	return u.next.RoundTrip(r)
}
