//go:build !linux

package main

import (
	"net"
	"net/netip"
)

// originalDst is nil off Linux: only explicit listeners work there.
var originalDst func(*net.TCPConn) (netip.AddrPort, error)
