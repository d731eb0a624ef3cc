package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Destinations says which outbound destinations get mTLS, and which SPIFFE ID each
// must prove. Today it is a static table from flags; automatic discovery of meshed
// destinations (auto mTLS) and secure naming from cluster data will implement the
// same interface, so the outbound path does not change.
type Destinations interface {
	// Lookup returns the identity dst must prove; false: pass dst through unchanged.
	Lookup(dst netip.AddrPort) (spiffeid.ID, bool)
}

// StaticDestinations is a fixed table: address -> expected SPIFFE ID.
type StaticDestinations map[netip.AddrPort]spiffeid.ID

// Lookup implements Destinations.
func (d StaticDestinations) Lookup(dst netip.AddrPort) (spiffeid.ID, bool) {
	id, ok := d[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
	return id, ok
}

// ParseDestination parses "IP:PORT=spiffe://trust.domain/path".
func ParseDestination(s string) (netip.AddrPort, spiffeid.ID, error) {
	addr, id, ok := strings.Cut(s, "=")
	if !ok {
		return netip.AddrPort{}, spiffeid.ID{}, fmt.Errorf("outbound destination %q: want IP:PORT=spiffe://trust-domain/path", s)
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(addr))
	if err != nil {
		return netip.AddrPort{}, spiffeid.ID{}, fmt.Errorf("outbound destination %q: %q is not IP:PORT: %w", s, addr, err)
	}
	sid, err := spiffeid.FromString(strings.TrimSpace(id))
	if err != nil {
		return netip.AddrPort{}, spiffeid.ID{}, fmt.Errorf("outbound destination %q: %q is not a SPIFFE ID: %w", s, id, err)
	}
	if sid.Path() == "" {
		return netip.AddrPort{}, spiffeid.ID{}, fmt.Errorf("outbound destination %q: the SPIFFE ID %q names no workload (no path)", s, id)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), sid, nil
}
