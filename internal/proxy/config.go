package proxy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config is the part of a PodProxyConfig the proxy enforces.
type Config struct {
	// Hash is spec.configHash, reported back as status.appliedHash.
	Hash string
	// Generation is metadata.generation, reported as the conditions'
	// observedGeneration.
	Generation int64
	// PodUID is spec.podUID: a configuration for another pod of the same name (a
	// StatefulSet's previous pod) is not applied.
	PodUID string
	// Identity is spec.identity, the pod's SPIFFE ID; its trust domain is the mesh's.
	Identity spiffeid.ID
	// CertificateExpected is false when the mesh has no issuer
	// (spec.certificateSecretName empty): no certificate will come.
	CertificateExpected bool
	// Default is spec.inbound.mode; Ports are the exceptions.
	Default Mode
	Ports   map[int]Mode
}

// ConfigFromSpec converts a PodProxyConfig into what the proxy enforces. It refuses
// what it cannot enforce safely (an unknown mode, a malformed identity), naming the
// field: the proxy then keeps what it enforced before.
func ConfigFromSpec(obj *PodProxyConfig) (*Config, error) {
	spec := &obj.Spec
	c := &Config{
		Hash:                spec.ConfigHash,
		Generation:          obj.Metadata.Generation,
		PodUID:              string(spec.PodUID),
		CertificateExpected: spec.CertificateSecretName != "",
		Ports:               map[int]Mode{},
	}
	if spec.Identity != "" {
		id, err := spiffeid.FromString(spec.Identity)
		if err != nil {
			return nil, fmt.Errorf("spec.identity %q is not a SPIFFE ID: %w", spec.Identity, err)
		}
		c.Identity = id
	}
	if !validMode(spec.Inbound.Mode) {
		return nil, fmt.Errorf("spec.inbound.mode %q is not one of STRICT, PERMISSIVE, DISABLE", spec.Inbound.Mode)
	}
	c.Default = spec.Inbound.Mode
	for i, p := range spec.Inbound.Ports {
		if !validMode(p.Mode) {
			return nil, fmt.Errorf("spec.inbound.ports[%d].mode %q is not one of STRICT, PERMISSIVE, DISABLE", i, p.Mode)
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fmt.Errorf("spec.inbound.ports[%d].port %d is not a port 1-65535", i, p.Port)
		}
		c.Ports[int(p.Port)] = p.Mode
	}
	return c, nil
}

func validMode(m Mode) bool {
	return m == ModeStrict || m == ModePermissive || m == ModeDisable
}

// ModeFor is the mode of an application port. Without a configuration every port
// is STRICT: the proxy fails closed.
func (c *Config) ModeFor(port int) Mode {
	if c == nil {
		return ModeStrict
	}
	if m, ok := c.Ports[port]; ok {
		return m
	}
	return c.Default
}

// NeedsCertificate says whether some port accepts only mTLS, so that the proxy is
// not ready without a certificate.
func (c *Config) NeedsCertificate() bool {
	if c == nil || c.Default == ModeStrict {
		return true
	}
	for _, m := range c.Ports {
		if m == ModeStrict {
			return true
		}
	}
	return false
}

// String is a short description for logs: "STRICT 8080=DISABLE".
func (c *Config) String() string {
	if c == nil {
		return "none (every port STRICT)"
	}
	ports := make([]int, 0, len(c.Ports))
	for p := range c.Ports {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	parts := []string{string(c.Default)}
	for _, p := range ports {
		parts = append(parts, strconv.Itoa(p)+"="+string(c.Ports[p]))
	}
	return strings.Join(parts, " ")
}
