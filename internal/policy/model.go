// Package policy is the single place where mTLS policy is decided: an in-memory index
// of namespaces, pods, Services and the three policy kinds, and a pure resolver over
// it. It has no Kubernetes client and no clock; controllers, webhooks and the explain
// view feed it objects and ask it questions, so they can never disagree.
//
// Precedence, for a meshed pod and for each port named by a port-level entry:
//
//	workload policy (port entry, then mode unless UNSET)   the oldest applying policy wins
//	  -> namespace policy "default" (unless absent or UNSET)
//	    -> mesh policy "default" (PERMISSIVE without one)
//	      -> raised to the mesh minimumMode when weaker
package policy

import (
	"maps"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshtls/meshtls-operator/api/v1alpha1"
)

// Mode is an mTLS mode.
type Mode = v1alpha1.Mode

// InjectLabel is the label, on a namespace or a pod, that meshes pods.
const (
	InjectLabel    = "meshtls.io/inject"
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"
)

// Names the resolver shares with injection: the sidecar's container name, and the
// annotation that takes inbound ports out of capture.
const (
	ProxyContainerName            = "meshtls-proxy"
	AnnotationExcludeInboundPorts = "meshtls.io/exclude-inbound-ports"
)

// rank orders modes from weakest to strongest; UNSET and unknown values rank lowest.
func rank(m Mode) int {
	switch m {
	case v1alpha1.ModeDisable:
		return 1
	case v1alpha1.ModePermissive:
		return 2
	case v1alpha1.ModeStrict:
		return 3
	}
	return 0
}

// Weaker reports whether a is a weaker mode than b (DISABLE < PERMISSIVE < STRICT).
func Weaker(a, b Mode) bool { return rank(a) < rank(b) }

// isSet reports whether m asks for a mode rather than inheriting one.
func isSet(m Mode) bool { return rank(m) > 0 }

// Mesh is the MeshMTLSPolicy "default".
type Mesh struct {
	Mode        Mode
	MinimumMode Mode
	TrustDomain string
	// HasIssuer is true when the mesh names an issuer (always, for a valid policy);
	// without a mesh policy there is none and no certificate is made.
	HasIssuer bool
}

// Pod is what the resolver needs of a pod.
type Pod struct {
	Namespace      string
	Name           string
	UID            string
	Labels         map[string]string
	ServiceAccount string
	// Ports are the container ports the pod declares, sorted and unique.
	Ports []int32
	// HostNetwork pods are never meshed: the proxy cannot capture their traffic
	// without capturing the node's.
	HostNetwork bool
	// Sidecar is true when the pod carries the meshtls-proxy container.
	Sidecar bool
	// ExcludedInboundPorts are the ports its meshtls.io/exclude-inbound-ports
	// annotation takes out of capture, sorted and unique (a malformed annotation is
	// refused at admission and read here as far as it parses).
	ExcludedInboundPorts []int32
}

// Equal reports whether two pods are the same to the resolver.
func (p *Pod) Equal(o *Pod) bool {
	return p.Namespace == o.Namespace && p.Name == o.Name && p.UID == o.UID && maps.Equal(p.Labels, o.Labels) &&
		p.ServiceAccount == o.ServiceAccount && slices.Equal(p.Ports, o.Ports) && p.HostNetwork == o.HostNetwork &&
		p.Sidecar == o.Sidecar && slices.Equal(p.ExcludedInboundPorts, o.ExcludedInboundPorts)
}

// Namespace is what the resolver needs of a namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Service is a core Service: its selector decides which pods a targetRef reaches.
type Service struct {
	Namespace string
	Name      string
	Selector  map[string]string
}

// NamespacePolicy is a NamespaceMTLSPolicy "default".
type NamespacePolicy struct {
	Namespace string
	Mode      Mode
}

// PortMode is the mode of one port.
type PortMode struct {
	Port int32
	Mode Mode
}

// WorkloadPolicy is a WorkloadMTLSPolicy.
type WorkloadPolicy struct {
	Namespace string
	Name      string
	// Created orders conflicting policies: the oldest wins, then the smallest name.
	Created time.Time
	// Selector is set for a label-selector policy; nil for a targetRefs policy and for
	// a selector that does not parse (which selects nothing).
	Selector labels.Selector
	// SelectorKey is the canonical form of the selector (see SelectorKey), for
	// equality; requirements the same, for overlap checks.
	SelectorKey  string
	requirements []requirement
	// Services are the names of the Services targetRefs name, sorted and unique.
	Services []string
	Mode     Mode
	// Ports are the port-level entries, sorted by port.
	Ports []PortMode
	// Invalid says why the policy selects nothing (e.g. a selector that does not
	// parse); empty when valid.
	Invalid string
}

// older reports whether a wins over b in a conflict.
func older(a, b *WorkloadPolicy) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}
