package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a redirected connection was addressed to
// before the capture rules rewrote it to the proxy's port (15006 inbound, 15001
// outbound). It asks the kernel's connection tracking through SO_ORIGINAL_DST
// (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6); both work with nftables "redirect" as well
// as with iptables REDIRECT, because they read the conntrack entry, not the rule.
//
// The socket family is taken from the connection's local address: an IPv4 client
// on a dual-stack listener arrives as an IPv4-mapped IPv6 address and is asked
// the IPv4 way. The result is unmapped (a plain IPv4 AddrPort for IPv4).
//
// A connection that no rule redirected — one made to 15006 or 15001 directly,
// or the proxy's own forwarded connection coming back to it — fails with
// ErrNotRedirected (conntrack then reports the listener's own address, or has no
// entry at all). The caller must refuse such a connection: forwarding it to its
// "original" destination would send it to the proxy itself.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: connection has no TCP local address")
	}
	la, ok := netip.AddrFromSlice(local.IP)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: bad local address %v", local.IP)
	}
	v4 := la.Unmap().Is4()

	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		dst    netip.AddrPort
		sysErr error
	)
	ctlErr := raw.Control(func(fd uintptr) {
		if v4 {
			dst, sysErr = originalDst4(int(fd))
		} else {
			dst, sysErr = originalDst6(int(fd))
		}
	})
	if ctlErr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", ctlErr)
	}
	if errors.Is(sysErr, unix.ENOENT) || errors.Is(sysErr, unix.ENOPROTOOPT) {
		// No conntrack entry, or no connection tracking in this namespace at all:
		// nothing can have been redirected.
		return netip.AddrPort{}, fmt.Errorf("%w: %v -> %v: %v", ErrNotRedirected, c.RemoteAddr(), c.LocalAddr(), sysErr)
	}
	if sysErr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v -> %v: %w", c.RemoteAddr(), c.LocalAddr(), sysErr)
	}
	if dst == netip.AddrPortFrom(la.Unmap(), uint16(local.Port)) {
		// Tracked but not translated: the client asked for the listener itself.
		return netip.AddrPort{}, fmt.Errorf("%w: %v -> %v", ErrNotRedirected, c.RemoteAddr(), c.LocalAddr())
	}
	return dst, nil
}

// ErrNotRedirected is OriginalDst's error for a connection no capture rule
// redirected.
var ErrNotRedirected = errors.New("connection was not redirected by capture: it has no other original destination")

// originalDst4 reads SO_ORIGINAL_DST, which fills a struct sockaddr_in.
func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: unexpected family %d", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from <linux/netfilter_ipv6/ip6_tables.h>;
// golang.org/x/sys/unix does not define it (it shares the value 80 with
// SO_ORIGINAL_DST but is asked at level SOL_IPV6).
const ip6tSoOriginalDst = 80

// originalDst6 reads IP6T_SO_ORIGINAL_DST, which fills a struct sockaddr_in6.
func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: unexpected family %d", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port)), nil
}

// ntohs converts the port, which the kernel stores in network byte order.
func ntohs(p uint16) uint16 {
	var b [2]byte
	*(*uint16)(unsafe.Pointer(&b[0])) = p
	return binary.BigEndian.Uint16(b[:])
}

func getsockopt(fd, level, name int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
