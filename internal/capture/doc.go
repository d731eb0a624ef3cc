// Package capture is the transparent-capture half of the meshtls data plane:
// it builds and programs the nftables rules that redirect a pod's TCP to the
// sidecar proxy (inbound to 15006, outbound to 15001), and recovers a redirected
// connection's original destination for the proxy's transparent listeners.
//
// The rules are built by pure functions from Options (see Build) and applied
// through netlink with github.com/google/nftables, so the init step runs from
// the same distroless image as the proxy, with no iptables binary. See
// docs/capture.md for the rules and why nftables.
package capture
