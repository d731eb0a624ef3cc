package kube

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

// Condition reasons the proxy writes.
const (
	// ReasonApplied: the proxy enforces spec.configHash.
	ReasonApplied = "Applied"
	// ReasonRejected: the proxy cannot enforce the spec (the message says why) and
	// keeps what it enforced before; with nothing before, every port is STRICT.
	ReasonRejected = "Rejected"
	// ReasonCertificateLoaded: a valid certificate for the pod's identity is loaded.
	// Other CertificateReady reasons come from the proxy: NoCertificate,
	// NoTrustBundle, NoTrustDomain, InvalidCertificate, Expired.
	ReasonCertificateLoaded = "Loaded"
)

// Observation is what the proxy enforces and counts now: the input of the status.
type Observation struct {
	Applied     proxy.Applied
	Certificate proxy.CertificateVerdict
	Counts      proxy.ConnectionCounts
	// LastPlaintext is zero when no plaintext connection was accepted.
	LastPlaintext time.Time
	// Generation is the metadata.generation of the PodProxyConfig last seen.
	Generation int64
}

// Desired is the status the proxy would write now, given the status last written
// (whose condition transition times are kept when a condition did not change).
func Desired(written *proxy.PodProxyConfigStatus, o Observation, now time.Time) *proxy.PodProxyConfigStatus {
	st := &proxy.PodProxyConfigStatus{}
	if written != nil {
		st.Conditions = append([]proxy.Condition(nil), written.Conditions...)
	}
	applied := proxy.Condition{Type: proxy.ConditionApplied, Status: proxy.ConditionFalse, ObservedGeneration: o.Generation}
	switch {
	case o.Applied.Rejected != "":
		applied.Reason, applied.Message = ReasonRejected, "not applying configHash "+o.Applied.RejectedHash+": "+o.Applied.Rejected
		if o.Applied.Config != nil {
			applied.Message += "; still enforcing " + o.Applied.Config.Hash
		} else {
			applied.Message += "; every port is STRICT meanwhile"
		}
	case o.Applied.Config != nil:
		applied.Status, applied.Reason = proxy.ConditionTrue, ReasonApplied
		applied.Message = "enforcing inbound " + o.Applied.Config.String()
	default:
		applied.Reason, applied.Message = ReasonRejected, "no PodProxyConfig applied yet; every port is STRICT meanwhile"
	}
	if o.Applied.Config != nil {
		st.AppliedHash = o.Applied.Config.Hash
	}
	cert := proxy.Condition{Type: proxy.ConditionCertificateReady, Status: proxy.ConditionFalse, ObservedGeneration: o.Generation,
		Reason: o.Certificate.Reason, Message: o.Certificate.Message}
	if o.Certificate.Ready {
		cert.Status = proxy.ConditionTrue
	}
	if cert.Reason == "" {
		cert.Reason = "Unknown"
	}
	for _, c := range []proxy.Condition{applied, cert} {
		c.LastTransitionTime = proxy.Time{Time: now.Truncate(time.Second)}
		proxy.SetCondition(&st.Conditions, c)
	}
	counts := o.Counts
	st.Connections = &counts
	// PatchStatus sends an absent lastPlaintextTime as null, so that a merge
	// patch removes one someone else wrote.
	if !o.LastPlaintext.IsZero() {
		st.LastPlaintextTime = &proxy.Time{Time: o.LastPlaintext.Truncate(time.Second)}
	}
	return st
}

// Decide is the write discipline: a new applied hash or a changed condition is
// written at once; changed counters or lastPlaintextTime at most once per interval
// (since the last write that carried counters); nothing when nothing changed. It
// returns whether to write now, and otherwise how long until counters may be
// written (0: nothing pending). It is pure.
func Decide(written, desired *proxy.PodProxyConfigStatus, lastWrite, now time.Time, interval time.Duration) (bool, time.Duration) {
	if written == nil {
		return true, 0
	}
	if written.AppliedHash != desired.AppliedHash || !sameConditions(written.Conditions, desired.Conditions) {
		return true, 0
	}
	if countsEqual(written.Connections, desired.Connections) &&
		timesEqual(written.LastPlaintextTime, desired.LastPlaintextTime) {
		return false, 0
	}
	if due := lastWrite.Add(interval); now.Before(due) {
		return false, due.Sub(now)
	}
	return true, 0
}

// Drifted reports whether the observed status differs from what the proxy last
// wrote in anything the proxy owns: counters, lastPlaintextTime, appliedHash or
// its conditions. A drifted status was forged or damaged and is rewritten.
func Drifted(written, observed *proxy.PodProxyConfigStatus) bool {
	if written == nil || observed == nil {
		return false
	}
	if written.AppliedHash != observed.AppliedHash || !countsEqual(written.Connections, observed.Connections) ||
		!timesEqual(written.LastPlaintextTime, observed.LastPlaintextTime) {
		return true
	}
	for _, typ := range []string{proxy.ConditionApplied, proxy.ConditionCertificateReady} {
		x, y := proxy.FindCondition(written.Conditions, typ), proxy.FindCondition(observed.Conditions, typ)
		if (x == nil) != (y == nil) {
			return true
		}
		if x != nil && (x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(y.LastTransitionTime.Time)) {
			return true
		}
	}
	return false
}

func countsEqual(a, b *proxy.ConnectionCounts) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func sameConditions(a, b []proxy.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		y := proxy.FindCondition(b, x.Type)
		if y == nil || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

func timesEqual(a, b *proxy.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Unix() == b.Unix()
}

// StatusWriter writes a PodProxyConfig's status (Client does, over the API).
type StatusWriter interface {
	PatchStatus(ctx context.Context, status *proxy.PodProxyConfigStatus) error
}

// Reporter writes the proxy's PodProxyConfig status by Decide's discipline.
type Reporter struct {
	Writer   StatusWriter
	Proxy    *proxy.Proxy
	Interval time.Duration // counters: at most once per Interval (one minute)
	Log      *slog.Logger
	// Writes counts status writes (the benchmark's API writes per proxy per hour).
	Writes func()

	mu         sync.Mutex
	uid        string
	generation int64
	written    *proxy.PodProxyConfigStatus // nil until the object was seen
	lastWrite  time.Time
	// observed is the status the watch last showed, when it differs from written:
	// another writer (any container of the pod passes the guard) changed it.
	observed *proxy.PodProxyConfigStatus
	// lastFix is when the proxy last rewrote a status someone else had changed:
	// at most once per Interval, so that a fight cannot become a write storm.
	lastFix time.Time
	seen    chan struct{}
}

// Observe tells the reporter about the PodProxyConfig as the watch saw it. The
// first time (and when the object was re-created) its status becomes the baseline,
// so that a restarted proxy does not rewrite an unchanged status. Later, a status
// that differs from what the proxy last wrote was written by someone else (the
// guard cannot tell the pod's containers apart): the proxy rewrites its own.
func (r *Reporter) Observe(obj *proxy.PodProxyConfig) {
	if obj == nil {
		return
	}
	r.mu.Lock()
	if r.seen == nil {
		r.seen = make(chan struct{}, 1)
	}
	r.generation = obj.Metadata.Generation
	if obj.Metadata.UID != r.uid {
		r.uid = obj.Metadata.UID
		st := obj.Status
		st.Conditions = append([]proxy.Condition(nil), st.Conditions...)
		r.written = &st
		r.observed = nil
	} else if r.written != nil && Drifted(r.written, &obj.Status) {
		st := obj.Status
		r.observed = &st
	} else {
		r.observed = nil
	}
	r.mu.Unlock()
	select {
	case r.seen <- struct{}{}:
	default:
	}
}

func (r *Reporter) observation() Observation {
	c := r.Proxy.Counters()
	o := Observation{
		Applied:     r.Proxy.Applied(),
		Certificate: r.Proxy.Certificate(),
		Counts: proxy.ConnectionCounts{
			MTLS: c.MTLS.Load(), Plaintext: c.Plaintext.Load(),
			RejectedPlaintext: c.RejectedPlaintext.Load(), HandshakeFailures: c.HandshakeFailures.Load(),
		},
		Generation: r.generation,
	}
	if ns := c.LastPlaintext.Load(); ns != 0 {
		o.LastPlaintext = time.Unix(0, ns)
	}
	return o
}

// Run writes the status until ctx ends, then writes changed counters one last time.
func (r *Reporter) Run(ctx context.Context) {
	if r.Interval <= 0 {
		r.Interval = time.Minute
	}
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	r.mu.Lock()
	if r.seen == nil {
		r.seen = make(chan struct{}, 1)
	}
	seen := r.seen
	r.mu.Unlock()
	var backoff time.Duration
	for {
		wait := r.Interval
		if pending, err := r.step(ctx, false); err != nil {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			wait = backoff
			r.Log.Warn("status write failed; retrying", "in", backoff, "err", err)
		} else {
			backoff = 0
			if pending > 0 {
				wait = pending
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			flush, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = r.step(flush, true)
			cancel()
			return
		case <-r.Proxy.Changed():
		case <-seen:
		case <-t.C:
		}
		t.Stop()
	}
}

// step writes the status when Decide says so (or, when final, whenever anything
// changed). It returns how long until pending counters may be written.
func (r *Reporter) step(ctx context.Context, final bool) (time.Duration, error) {
	r.mu.Lock()
	written, lastWrite, observed, lastFix := r.written, r.lastWrite, r.observed, r.lastFix
	uid := r.uid
	obs := r.observation()
	r.mu.Unlock()
	if uid == "" {
		return 0, nil // the object was not seen yet: nothing to write to
	}
	now := time.Now()
	want := Desired(written, obs, now)
	write, pending := Decide(written, want, lastWrite, now, r.Interval)
	if final && pending > 0 {
		write = true
	}
	fix := false
	if !write && observed != nil {
		// Someone else changed the status: rewrite the proxy's own, rate-limited.
		if due := lastFix.Add(r.Interval); now.Before(due) {
			if pending == 0 || due.Sub(now) < pending {
				pending = due.Sub(now)
			}
		} else {
			write, fix = true, true
			if r.Log != nil {
				r.Log.Warn("PodProxyConfig status was changed by another writer; rewriting the proxy's own")
			}
		}
	}
	if !write {
		return pending, nil
	}
	if err := r.Writer.PatchStatus(ctx, want); err != nil {
		return 0, err
	}
	if r.Writes != nil {
		r.Writes()
	}
	r.mu.Lock()
	if r.uid == uid {
		r.written, r.lastWrite = want, now
		r.observed = nil // the watch shows the next change, ours or another's
		if fix || observed != nil {
			r.lastFix = now
		}
	}
	r.mu.Unlock()
	return 0, nil
}
