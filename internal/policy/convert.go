package policy

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
	"github.com/meshtls/meshtls-operator/internal/identity"
)

// MeshFrom converts the MeshMTLSPolicy "default"; nil for nil.
func MeshFrom(p *v1alpha1.MeshMTLSPolicy) *Mesh {
	if p == nil {
		return nil
	}
	m := &Mesh{
		Mode:        p.Spec.Mode,
		MinimumMode: p.Spec.MinimumMode,
		TrustDomain: p.Spec.TrustDomain,
		HasIssuer:   p.Spec.IssuerRef.Name != "",
	}
	if !isSet(m.Mode) {
		m.Mode = v1alpha1.MeshDefaultMode
	}
	if m.TrustDomain == "" {
		m.TrustDomain = identity.DefaultTrustDomain
	}
	return m
}

// PodFrom converts a pod.
func PodFrom(p *corev1.Pod) *Pod {
	out := &Pod{
		Namespace:      p.Namespace,
		Name:           p.Name,
		UID:            string(p.UID),
		Labels:         p.Labels,
		ServiceAccount: p.Spec.ServiceAccountName,
		HostNetwork:    p.Spec.HostNetwork,
	}
	out.ExcludedInboundPorts, _ = ParsePorts(p.Annotations[AnnotationExcludeInboundPorts])
	for _, c := range p.Spec.InitContainers {
		if c.Name == ProxyContainerName {
			out.Sidecar = true
		}
	}
	seen := map[int32]bool{}
	for _, containers := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range containers {
			for _, port := range c.Ports {
				if port.Protocol == "" || port.Protocol == corev1.ProtocolTCP {
					if !seen[port.ContainerPort] {
						seen[port.ContainerPort] = true
						out.Ports = append(out.Ports, port.ContainerPort)
					}
				}
			}
		}
	}
	sort.Slice(out.Ports, func(i, j int) bool { return out.Ports[i] < out.Ports[j] })
	return out
}

// NamespaceFrom converts a namespace.
func NamespaceFrom(n *corev1.Namespace) Namespace {
	return Namespace{Name: n.Name, Labels: n.Labels}
}

// ServiceFrom converts a Service.
func ServiceFrom(s *corev1.Service) *Service {
	return &Service{Namespace: s.Namespace, Name: s.Name, Selector: s.Spec.Selector}
}

// NamespacePolicyFrom converts a NamespaceMTLSPolicy; ok is false for one not named
// "default" (the schema refuses those; the resolver ignores any that slipped in).
func NamespacePolicyFrom(p *v1alpha1.NamespaceMTLSPolicy) (out *NamespacePolicy, ok bool) {
	if p.Name != v1alpha1.NamespaceMTLSPolicyName {
		return nil, false
	}
	return &NamespacePolicy{Namespace: p.Namespace, Mode: p.Spec.Mode}, true
}

// WorkloadPolicyFrom converts a WorkloadMTLSPolicy. A policy whose selector does not
// parse selects nothing and says why in Invalid.
func WorkloadPolicyFrom(p *v1alpha1.WorkloadMTLSPolicy) *WorkloadPolicy {
	out := &WorkloadPolicy{
		Namespace: p.Namespace,
		Name:      p.Name,
		Created:   p.CreationTimestamp.Time,
		Mode:      p.Spec.Mode,
	}
	switch {
	case p.Spec.Selector != nil && len(p.Spec.TargetRefs) > 0:
		out.Invalid = "exactly one of spec.selector and spec.targetRefs must be set"
	case p.Spec.Selector != nil:
		if len(p.Spec.Selector.MatchLabels) == 0 && len(p.Spec.Selector.MatchExpressions) == 0 {
			out.Invalid = "spec.selector may not be empty"
			break
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			out.Invalid = fmt.Sprintf("spec.selector: %v", err)
			break
		}
		out.Selector = sel
		out.SelectorKey = SelectorKey(p.Spec.Selector)
		out.requirements = canonicalRequirements(p.Spec.Selector)
	default:
		for _, ref := range p.Spec.TargetRefs {
			if ref.Group == "" && ref.Kind == "Service" {
				out.Services = append(out.Services, string(ref.Name))
			}
		}
		slices.Sort(out.Services)
		out.Services = slices.Compact(out.Services)
		if len(out.Services) == 0 {
			out.Invalid = "spec.targetRefs must name at least one core Service"
		}
	}
	for _, port := range p.Spec.PortLevelMTLS {
		out.Ports = append(out.Ports, PortMode{Port: port.Port, Mode: port.Mode})
	}
	sort.Slice(out.Ports, func(i, j int) bool { return out.Ports[i].Port < out.Ports[j].Port })
	return out
}

// ParsePorts parses a comma-separated list of TCP ports ("8081, 9000") into sorted,
// unique port numbers. It returns what parses along with an error naming the first
// entry that does not.
func ParsePorts(list string) ([]int32, error) {
	var out []int32
	var bad error
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			if bad == nil {
				bad = fmt.Errorf("%q is not a port number (1-65535)", f)
			}
			continue
		}
		out = append(out, int32(n))
	}
	slices.Sort(out)
	return slices.Compact(out), bad
}
