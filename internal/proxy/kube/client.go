// Package kube connects the proxy to the API server with the pod's own bound
// service-account token: it follows the pod's PodProxyConfig (one object, by name)
// and writes that object's status. It speaks the API's JSON over net/http rather
// than through client-go: one object needs neither a cache, a scheme nor an
// informer, and the sidecar's memory is a feature (the binary links no
// k8s.io/apimachinery at all).
package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

// FieldManager is the proxy's field manager for its status writes.
const FieldManager = "meshtls-proxy"

// API group and version of PodProxyConfig.
const (
	group   = "security.meshtls.io"
	version = "v1alpha1"
)

// Client reads and watches one PodProxyConfig and writes its status.
type Client struct {
	http      *http.Client
	base      string // .../namespaces/<ns>/podproxyconfigs
	Namespace string
	Name      string
	Log       *slog.Logger

	// watchSeconds is each watch's timeoutSeconds; 0: 300 to 600, at random.
	watchSeconds int
	// watchMargin is how long past timeoutSeconds a watch may last before the
	// client ends it itself; 0: 30 seconds.
	watchMargin time.Duration
}

// NewClient makes a client for the PodProxyConfig namespace/name.
func NewClient(cfg *Config, namespace, name string, log *slog.Logger) (*Client, error) {
	if namespace == "" || name == "" {
		return nil, errors.New("the pod's namespace and name are needed (POD_NAMESPACE and POD_NAME, which injection sets)")
	}
	hc, err := cfg.HTTPClient()
	if err != nil {
		return nil, err
	}
	host, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("API server address %q: %w", cfg.Host, err)
	}
	if host.Scheme == "" {
		host.Scheme = "https"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := host.JoinPath("apis", group, version, "namespaces", namespace, "podproxyconfigs")
	return &Client{http: hc, base: base.String(), Namespace: namespace, Name: name, Log: log}, nil
}

// apiError is a non-2xx answer, with the API's Status when it sent one.
type apiError struct {
	Code    int
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("API server answered %d: %s", e.Code, e.Message)
}

func statusCode(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

func (c *Client) do(ctx context.Context, method, u, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var st apiStatus
		msg := string(b)
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return nil, &apiError{Code: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

func (c *Client) selector() string {
	return "fieldSelector=" + url.QueryEscape("metadata.name="+c.Name)
}

// list returns the object (nil when absent) and the list's resourceVersion.
// apiStatus is a metav1.Status, the API's error body.
type apiStatus struct {
	Code    int32  `json:"code"`
	Message string `json:"message"`
}

func (c *Client) list(ctx context.Context) (*proxy.PodProxyConfig, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, c.base+"?"+c.selector(), "", nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []proxy.PodProxyConfig `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, "", fmt.Errorf("failed to decode the PodProxyConfig list: %w", err)
	}
	for i := range list.Items {
		if list.Items[i].Metadata.Name == c.Name {
			return &list.Items[i], list.Metadata.ResourceVersion, nil
		}
	}
	return nil, list.Metadata.ResourceVersion, nil
}

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

var errExpired = errors.New("resourceVersion expired")

// watch streams changes from rv until the server ends the watch, calling seen
// for each version of the object (nil: deleted). It returns the last
// resourceVersion it saw.
func (c *Client) watch(ctx context.Context, rv string, seen func(*proxy.PodProxyConfig)) (string, error) {
	timeout := c.watchSeconds
	if timeout <= 0 {
		timeout = 300 + rand.IntN(300) // spread re-watches of many proxies
	}
	margin := c.watchMargin
	if margin <= 0 {
		margin = 30 * time.Second
	}
	u := c.base + "?" + c.selector() + "&watch=true&allowWatchBookmarks=true&timeoutSeconds=" + strconv.Itoa(timeout) + "&resourceVersion=" + url.QueryEscape(rv)
	// The server ends the watch after timeoutSeconds; a stream that outlives it
	// by the margin is stalled (a dead connection, a stuck intermediary): end it
	// here, so that Follow lists and watches again.
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, time.Duration(timeout)*time.Second+margin)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, u, "", nil)
	if err != nil {
		if statusCode(err) == http.StatusGone {
			return rv, errExpired
		}
		return rv, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || parent.Err() != nil {
				return rv, nil
			}
			if ctx.Err() != nil {
				return rv, fmt.Errorf("the watch outlived its timeoutSeconds=%d by %s: the stream stalled; watching again", timeout, margin)
			}
			return rv, fmt.Errorf("watch stream: %w", err)
		}
		switch ev.Type {
		case "ERROR":
			var st apiStatus
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return rv, errExpired
			}
			return rv, &apiError{Code: int(st.Code), Message: st.Message}
		case "BOOKMARK":
			var meta struct {
				Metadata proxy.ObjectMeta `json:"metadata"`
			}
			if json.Unmarshal(ev.Object, &meta) == nil && meta.Metadata.ResourceVersion != "" {
				rv = meta.Metadata.ResourceVersion
			}
		case "ADDED", "MODIFIED", "DELETED":
			obj := &proxy.PodProxyConfig{}
			if err := json.Unmarshal(ev.Object, obj); err != nil {
				return rv, fmt.Errorf("failed to decode a PodProxyConfig event: %w", err)
			}
			rv = obj.Metadata.ResourceVersion
			if ev.Type == "DELETED" {
				seen(nil)
			} else {
				seen(obj)
			}
		}
	}
}

// Follow keeps seen up to date with the PodProxyConfig until ctx ends: a list, then
// a watch from the list's resourceVersion, re-watched when the server ends it and
// re-listed when the version expired. Failures back off exponentially with jitter
// up to 30s. seen(nil) means the object does not exist (or was deleted).
func (c *Client) Follow(ctx context.Context, seen func(*proxy.PodProxyConfig)) {
	backoff := time.Duration(0)
	fail := func(what string, err error) {
		backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
		wait := backoff/2 + rand.N(backoff/2+1)
		c.Log.Warn(what+" failed; retrying", "podproxyconfig", c.Namespace+"/"+c.Name, "in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	for ctx.Err() == nil {
		obj, rv, err := c.list(ctx)
		if err != nil {
			if ctx.Err() == nil {
				fail("listing the PodProxyConfig", err)
			}
			continue
		}
		seen(obj)
		for ctx.Err() == nil {
			started := time.Now()
			rv, err = c.watch(ctx, rv, seen)
			if errors.Is(err, errExpired) {
				break
			}
			if err != nil {
				if ctx.Err() == nil {
					fail("watching the PodProxyConfig", err)
				}
				continue
			}
			// A watch that lasted is a success; one the server closed at once is not.
			if time.Since(started) > 10*time.Second {
				backoff = 0
			} else if ctx.Err() == nil {
				fail("watching the PodProxyConfig", errors.New("the watch ended at once"))
			}
		}
		if err == nil {
			backoff = 0
		}
	}
}

// StatusPatch is the merge patch that sets the status to exactly status in the
// fields the proxy owns: an absent appliedHash, connections or lastPlaintextTime is
// sent as null, so that a value someone else wrote does not survive the merge.
func StatusPatch(status *proxy.PodProxyConfigStatus) ([]byte, error) {
	raw, err := json.Marshal(status)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for _, k := range []string{"appliedHash", "conditions", "connections", "lastPlaintextTime"} {
		if _, ok := m[k]; !ok {
			m[k] = nil
		}
	}
	return json.Marshal(map[string]any{"status": m})
}

// PatchStatus writes the status subresource with a JSON merge patch as field
// manager meshtls-proxy. Only the pod's own proxy may (the guard checks the token's
// pod name); the operator never writes PodProxyConfig status.
func (c *Client) PatchStatus(ctx context.Context, status *proxy.PodProxyConfigStatus) error {
	body, err := StatusPatch(status)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPatch, c.base+"/"+url.PathEscape(c.Name)+"/status?fieldManager="+FieldManager, "application/merge-patch+json", body)
	if err != nil {
		return fmt.Errorf("failed to write the status of PodProxyConfig %s/%s: %w", c.Namespace, c.Name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}
