package kube

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

type recordingWriter struct{ writes []*proxy.PodProxyConfigStatus }

func (w *recordingWriter) PatchStatus(_ context.Context, st *proxy.PodProxyConfigStatus) error {
	c := *st
	w.writes = append(w.writes, &c)
	return nil
}

// Another container of the pod passes the guard and may write the status; the
// proxy must not leave a forged status standing, nor fight it more than once per
// interval.
func TestReporterRewritesForgedStatus(t *testing.T) {
	p := proxy.New(&proxy.MemorySource{}, proxy.Options{})
	w := &recordingWriter{}
	r := &Reporter{Writer: w, Proxy: p, Interval: time.Hour}
	r.Observe(&proxy.PodProxyConfig{Metadata: proxy.ObjectMeta{UID: "u1", Generation: 1}})
	if _, err := r.step(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 1 {
		t.Fatalf("want the first status written, got %d writes", len(w.writes))
	}
	own := *w.writes[0]
	r.Observe(&proxy.PodProxyConfig{Metadata: proxy.ObjectMeta{UID: "u1", Generation: 1}, Status: own})
	if _, err := r.step(context.Background(), false); err != nil || len(w.writes) != 1 {
		t.Fatalf("should not rewrite its own status: %d writes, err %v", len(w.writes), err)
	}

	forge := func() *proxy.PodProxyConfig {
		st := own
		st.Conditions = append([]proxy.Condition(nil), own.Conditions...)
		st.AppliedHash = "sha256:forged"
		st.Connections = &proxy.ConnectionCounts{RejectedPlaintext: 1 << 40}
		st.LastPlaintextTime = &proxy.Time{Time: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)}
		return &proxy.PodProxyConfig{Metadata: proxy.ObjectMeta{UID: "u1", Generation: 1}, Status: st}
	}
	r.Observe(forge())
	if _, err := r.step(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 2 {
		t.Fatalf("should rewrite a forged status, got %d writes", len(w.writes))
	}
	fixed := w.writes[1]
	if fixed.AppliedHash != own.AppliedHash || fixed.Connections.RejectedPlaintext != 0 || fixed.LastPlaintextTime != nil {
		t.Fatalf("the rewrite should be the proxy's own status, got %+v", fixed)
	}
	body, err := StatusPatch(fixed)
	if err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Status map[string]json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(body, &patch); err != nil {
		t.Fatal(err)
	}
	if v, ok := patch.Status["lastPlaintextTime"]; !ok || string(v) != "null" {
		t.Fatalf("the merge patch should clear a forged lastPlaintextTime with null, got %s", body)
	}

	// A second forgery within the interval waits for it: no write storm.
	r.Observe(forge())
	pending, err := r.step(context.Background(), false)
	if err != nil || len(w.writes) != 2 {
		t.Fatalf("should rewrite at most once per interval: %d writes, err %v", len(w.writes), err)
	}
	if pending <= 0 || pending > time.Hour {
		t.Fatalf("want the rewrite pending within the interval, got %v", pending)
	}
}
