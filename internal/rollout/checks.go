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

// check looks at the meshed pods of a namespace and says what, if anything, keeps it
// from promotion.
type check func(pods []Pod, now time.Time, window time.Duration) *blocker

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
}

func blockers(pods []Pod, now time.Time, window time.Duration) []*blocker {
	var out []*blocker
	for _, c := range readiness {
		if b := c(pods, now, window); b != nil {
			out = append(out, b)
		}
	}
	return out
}

func withoutSidecar(pods []Pod, _ time.Time, _ time.Duration) *blocker {
	names := podNames(pods, func(p *Pod) bool { return p.Config && p.SidecarMissing })
	if len(names) == 0 {
		return nil
	}
	return &blocker{needsUser: true, message: fmt.Sprintf("%s no sidecar and cannot speak mTLS; recreate %s: %s",
		ofPods(len(names), len(pods), "has", "have"), them(len(names)), nameFew(names))}
}

func withoutConfig(pods []Pod, _ time.Time, _ time.Duration) *blocker {
	names := podNames(pods, func(p *Pod) bool { return !p.Config })
	if len(names) == 0 {
		return nil
	}
	return &blocker{message: fmt.Sprintf("%s no PodProxyConfig yet: %s", ofPods(len(names), len(pods), "has", "have"), nameFew(names))}
}

func notApplied(pods []Pod, _ time.Time, _ time.Duration) *blocker {
	names := podNames(pods, func(p *Pod) bool { return p.Config && !p.SidecarMissing && !p.Applied })
	if len(names) == 0 {
		return nil
	}
	return &blocker{message: fmt.Sprintf("%s not applied %s config: %s", ofPods(len(names), len(pods), "has", "have"), its(len(names)), nameFew(names))}
}

func withoutCertificate(pods []Pod, _ time.Time, _ time.Duration) *blocker {
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

func plaintextSeen(pods []Pod, now time.Time, window time.Duration) *blocker {
	var last *Pod
	for i := range pods {
		if p := &pods[i]; !p.LastPlaintext.IsZero() && (last == nil || p.LastPlaintext.After(last.LastPlaintext)) {
			last = p
		}
	}
	if last == nil {
		return nil
	}
	until := last.LastPlaintext.Add(window)
	if !now.Before(until) {
		return nil
	}
	from := ""
	if last.LastPlaintextFrom != "" {
		from = " from " + last.LastPlaintextFrom
	}
	return &blocker{until: until, message: fmt.Sprintf("plaintext seen %s ago on pod %s%s; promotion needs %s without plaintext, %s left",
		human(now.Sub(last.LastPlaintext)), last.Name, from, human(window), human(until.Sub(now)))}
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
