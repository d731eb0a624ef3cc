package rollout

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// blocker is one reason a namespace may not be promoted yet.
type blocker struct {
	message string
	// until is when the blocker lifts by itself (zero: only a change lifts it).
	until time.Time
	// needsUser: nothing lifts it but a user's action.
	needsUser bool
}

// checkEnv is what the checks know besides the pods.
type checkEnv struct {
	now    time.Time
	window time.Duration
	// lag is how late a proxy may report a plaintext connection (its report interval).
	lag time.Duration
	// last is the latest plaintext the rollout remembers for the namespace (from pods
	// that may be gone), zero when none.
	last    time.Time
	lastPod string
}

// check looks at the meshed pods of a namespace and says what, if anything, keeps it
// from promotion.
type check func(pods []Pod, env *checkEnv) *blocker

// readiness is the chain of promotion checks, in the order their messages are shown.
// A namespace is promoted only when none of them blocks.
var readiness = []check{
	// A pod without a sidecar cannot speak mTLS at all: STRICT would cut it off.
	withoutSidecar,
	// A pod whose PodProxyConfig does not exist yet has nothing to apply.
	withoutConfig,
	// Until the proxy enforces its configuration, nothing else it reports means much.
	notApplied,
	// A STRICT port refuses every connection until the proxy holds a certificate.
	withoutCertificate,
	// A client that still speaks plaintext would be refused.
	plaintextSeen,
	// A pod that has not been watched for a whole plaintextWindow has no evidence
	// either way: its silence is not "no plaintext".
	notWatchedLongEnough,
}

func blockers(pods []Pod, env *checkEnv) []*blocker {
	var out []*blocker
	for _, c := range readiness {
		if b := c(pods, env); b != nil {
			out = append(out, b)
		}
	}
	return out
}

func withoutSidecar(pods []Pod, _ *checkEnv) *blocker {
	names := podNames(pods, func(p *Pod) bool { return p.Config && p.SidecarMissing })
	if len(names) == 0 {
		return nil
	}
	return &blocker{needsUser: true, message: fmt.Sprintf("%s no sidecar and cannot speak mTLS; recreate %s: %s",
		ofPods(len(names), len(pods), "has", "have"), them(len(names)), nameFew(names))}
}

func withoutConfig(pods []Pod, _ *checkEnv) *blocker {
	names := podNames(pods, func(p *Pod) bool { return !p.Config })
	if len(names) == 0 {
		return nil
	}
	return &blocker{message: fmt.Sprintf("%s no PodProxyConfig yet: %s", ofPods(len(names), len(pods), "has", "have"), nameFew(names))}
}

func notApplied(pods []Pod, _ *checkEnv) *blocker {
	names := podNames(pods, func(p *Pod) bool { return p.Config && !p.SidecarMissing && !p.Applied })
	if len(names) == 0 {
		return nil
	}
	return &blocker{message: fmt.Sprintf("%s not applied %s config: %s", ofPods(len(names), len(pods), "has", "have"), its(len(names)), nameFew(names))}
}

func withoutCertificate(pods []Pod, _ *checkEnv) *blocker {
	var names []string
	for i := range pods {
		p := &pods[i]
		if !p.Config || p.SidecarMissing || p.CertificateReady {
			continue
		}
		n := p.Name
		if p.CertificateReason != "" {
			n += " (" + p.CertificateReason + ")"
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil
	}
	return &blocker{message: fmt.Sprintf("%s no ready certificate: %s", ofPods(len(names), len(pods), "has", "have"), nameFew(names))}
}

func plaintextSeen(pods []Pod, env *checkEnv) *blocker {
	at, name, from := env.last, env.lastPod, ""
	for i := range pods {
		if p := &pods[i]; !p.LastPlaintext.IsZero() && !p.LastPlaintext.Before(at) {
			at, name, from = p.LastPlaintext, p.Name, p.LastPlaintextFrom
		}
	}
	if at.IsZero() {
		return nil
	}
	until := at.Add(env.window)
	if !env.now.Before(until) {
		return nil
	}
	if from != "" {
		from = " from " + from
	}
	return &blocker{until: until, message: fmt.Sprintf("plaintext seen %s ago on pod %s%s; promotion needs %s without plaintext, %s left",
		human(env.now.Sub(at)), name, from, human(env.window), human(until.Sub(env.now)))}
}

// notWatchedLongEnough blocks pods whose proxy has not been watched for a whole
// plaintextWindow: one created a minute ago has seen a minute of traffic, and no
// lastPlaintextTime from it says nothing about the rest of the window. A pod counts
// as watched once plaintextWindow has passed since its PodProxyConfig was created and
// its proxy reported after that, or, for a proxy with nothing new to report (it
// writes only changes), once its report interval has passed as well.
func notWatchedLongEnough(pods []Pod, env *checkEnv) *blocker {
	var worst *Pod
	var worstUntil time.Time
	var unknown []string
	n := 0
	for i := range pods {
		p := &pods[i]
		if !p.Config || p.SidecarMissing {
			continue
		}
		if p.Created.IsZero() {
			// No evidence of how long it was watched: fail closed.
			unknown = append(unknown, p.Name)
			continue
		}
		until := p.watchedUntil(env.window, env.lag)
		if !env.now.Before(until) {
			continue
		}
		n++
		if worst == nil || until.After(worstUntil) {
			worst, worstUntil = p, until
		}
	}
	if worst == nil {
		if len(unknown) > 0 {
			return &blocker{message: fmt.Sprintf("%s no known start, so no plaintext window: %s", ofPods(len(unknown), len(pods), "has", "have"), nameFew(unknown))}
		}
		return nil
	}
	windowEnd := worst.Created.Add(env.window)
	var msg string
	if env.now.Before(windowEnd) {
		msg = fmt.Sprintf("pod %s started %s ago: watching for plaintext for %s more", worst.Name, human(env.now.Sub(worst.Created)), human(windowEnd.Sub(env.now)))
	} else {
		msg = fmt.Sprintf("pod %s: its plaintext window ended %s ago; waiting up to %s more for its proxy's next report", worst.Name, human(env.now.Sub(windowEnd)), human(worstUntil.Sub(env.now)))
	}
	if n > 1 {
		msg += fmt.Sprintf(" (%d pods not watched for %s yet)", n, human(env.window))
	}
	return &blocker{until: worstUntil, message: msg}
}

// rise is the increase of rejectedPlaintext since promotion.
type rise struct {
	total int64
	pods  []string // "web-0 +3", sorted by pod name
}

// rises compares each pod's rejectedPlaintext with its value at promotion. A counter
// below its baseline belongs to a proxy that restarted since: all of it counts, as
// Prometheus' increase() counts a reset. Pods that came later start from zero.
func rises(baseline []v1alpha1.PodCounter, pods []Pod) rise {
	at := make(map[string]int64, len(baseline))
	for _, b := range baseline {
		at[b.Pod] = b.Value
	}
	var r rise
	for _, p := range pods {
		d := p.RejectedPlaintext - at[p.Name]
		if p.RejectedPlaintext < at[p.Name] {
			d = p.RejectedPlaintext
		}
		if d > 0 {
			r.total += d
			r.pods = append(r.pods, fmt.Sprintf("%s +%d", p.Name, d))
		}
	}
	sort.Strings(r.pods)
	return r
}

// maxBaseline bounds rejectedPlaintextAtPromotion (its schema MaxItems). Pods beyond
// it are judged against zero: a rise is assumed rather than missed.
const maxBaseline = 1000

// baselineOf records the pods whose rejectedPlaintext is not zero, sorted by pod.
func baselineOf(pods []Pod) []v1alpha1.PodCounter {
	var out []v1alpha1.PodCounter
	for _, p := range pods {
		if p.RejectedPlaintext > 0 {
			out = append(out, v1alpha1.PodCounter{Pod: p.Name, Value: p.RejectedPlaintext})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	if len(out) > maxBaseline {
		out = out[:maxBaseline]
	}
	return out
}

func podNames(pods []Pod, match func(*Pod) bool) []string {
	var out []string
	for i := range pods {
		if match(&pods[i]) {
			out = append(out, pods[i].Name)
		}
	}
	return out
}

// maxNamed is how many pods or namespaces a message names before it counts the rest.
const maxNamed = 3

func nameFew(names []string) string {
	if len(names) <= maxNamed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamed], ", "), len(names)-maxNamed)
}

// ofPods renders "1 of 12 pods has" / "3 of 12 pods have".
func ofPods(n, total int, one, many string) string {
	verb := many
	if n == 1 {
		verb = one
	}
	return fmt.Sprintf("%d of %d pods %s", n, total, verb)
}

func its(n int) string {
	if n == 1 {
		return "its"
	}
	return "their"
}

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

// human renders a duration the way kubectl shows ages, rounded to the second.
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		m, s := int(d.Minutes()), int(d.Seconds())%60
		if s == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s)
	default:
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
}
