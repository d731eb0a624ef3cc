package kube

import (
	"testing"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)
	cfg := func(hash string) *proxy.Config { return &proxy.Config{Hash: hash, Default: proxy.ModeStrict} }
	ready := proxy.CertificateVerdict{Ready: true, Reason: ReasonCertificateLoaded, Message: "ok"}
	obs := func(hash string, mtls int64) Observation {
		return Observation{Applied: proxy.Applied{Config: cfg(hash)}, Certificate: ready, Counts: proxy.ConnectionCounts{MTLS: mtls}, Generation: 1}
	}
	written := Desired(nil, obs("sha256:a", 5), t0)

	cases := []struct {
		name        string
		obs         Observation
		lastWrite   time.Time
		now         time.Time
		wantWrite   bool
		wantPending time.Duration
	}{
		{name: "should write nothing while idle",
			obs: obs("sha256:a", 5), lastWrite: t0, now: t0.Add(time.Hour)},
		{name: "should write a new applied hash at once",
			obs: obs("sha256:b", 5), lastWrite: t0, now: t0.Add(time.Second), wantWrite: true},
		{name: "should write a condition change at once",
			obs: func() Observation {
				o := obs("sha256:a", 5)
				o.Certificate = proxy.CertificateVerdict{Reason: "Expired", Message: "expired"}
				return o
			}(), lastWrite: t0, now: t0.Add(time.Second), wantWrite: true},
		{name: "should write a rejected configuration at once",
			obs: func() Observation {
				o := obs("sha256:a", 5)
				o.Applied.Rejected, o.Applied.RejectedHash = "spec.podUID is another pod's", "sha256:b"
				return o
			}(), lastWrite: t0, now: t0.Add(time.Second), wantWrite: true},
		{name: "should hold changed counters until a minute after the last write",
			obs: obs("sha256:a", 6), lastWrite: t0, now: t0.Add(20 * time.Second), wantPending: 40 * time.Second},
		{name: "should write changed counters a minute after the last write",
			obs: obs("sha256:a", 6), lastWrite: t0, now: t0.Add(time.Minute), wantWrite: true},
		{name: "should hold a new lastPlaintextTime like the counters",
			obs: func() Observation {
				o := obs("sha256:a", 5)
				o.LastPlaintext = t0.Add(10 * time.Second)
				return o
			}(), lastWrite: t0, now: t0.Add(30 * time.Second), wantPending: 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := Desired(written, tc.obs, tc.now)
			write, pending := Decide(written, want, tc.lastWrite, tc.now, time.Minute)
			if write != tc.wantWrite || pending != tc.wantPending {
				t.Fatalf("want write=%v pending=%v, got write=%v pending=%v", tc.wantWrite, tc.wantPending, write, pending)
			}
		})
	}
}

func TestDesired(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC)
	o := Observation{Applied: proxy.Applied{Config: &proxy.Config{Hash: "sha256:a", Default: proxy.ModeStrict}},
		Certificate: proxy.CertificateVerdict{Ready: true, Reason: ReasonCertificateLoaded, Message: "ok"}, Generation: 3}
	first := Desired(nil, o, t0)
	if first.AppliedHash != "sha256:a" || len(first.Conditions) != 2 {
		t.Fatalf("got %+v", first)
	}
	for _, c := range first.Conditions {
		if c.Status != proxy.ConditionTrue || c.ObservedGeneration != 3 {
			t.Fatalf("want %s True at generation 3, got %+v", c.Type, c)
		}
	}
	t.Run("should keep the transition time of an unchanged condition", func(t *testing.T) {
		later := Desired(first, o, t0.Add(time.Hour))
		for i := range later.Conditions {
			if !later.Conditions[i].LastTransitionTime.Equal(first.Conditions[i].LastTransitionTime.Time) {
				t.Fatal("the transition time moved")
			}
		}
	})
	t.Run("should say every port is STRICT before a configuration is applied", func(t *testing.T) {
		none := Desired(nil, Observation{}, t0)
		c := none.Conditions[0]
		if c.Type != proxy.ConditionApplied || c.Status != proxy.ConditionFalse || none.AppliedHash != "" {
			t.Fatalf("got %+v", none)
		}
	})
	t.Run("should keep reporting the hash still enforced when a new spec is rejected", func(t *testing.T) {
		r := o
		r.Applied.Rejected, r.Applied.RejectedHash = "bad", "sha256:b"
		st := Desired(first, r, t0)
		if st.AppliedHash != "sha256:a" {
			t.Fatalf("got %q", st.AppliedHash)
		}
	})
}
