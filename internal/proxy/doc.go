// Package proxy is the meshtls data plane: the listeners, sniffing, TLS and
// forwarding of the meshtls-proxy sidecar.
//
// For every inbound connection the proxy learns the application port (from the
// explicit listener, or from the original destination of a captured connection),
// looks up that port's mode in the pod's PodProxyConfig, and:
//
//	first bytes ──► Classify ──► ClientHello ──► TLS 1.3 handshake ──► VerifyPeer ──► app
//	                    │                          (STRICT, PERMISSIVE)
//	                    └──────► anything else / silence ──► plaintext ──► app (PERMISSIVE)
//	                                                    └──► refused      (STRICT)
//	DISABLE: no sniffing at all, bytes pass through as they come.
//
// The pieces follow ghostunnel's layout: a certificate Source behind one small
// interface (files that the kubelet swaps atomically in production, memory in
// tests); a state that is rebuilt on every change and published with one pointer
// swap, so the per-connection cost of a reload is a pointer load; a pure access
// decision (VerifyPeer) that runs in tls.Config.VerifyConnection, so resumed
// sessions are checked again against the current trust bundle; and plain copies in
// the data path. Without a configuration every port is STRICT, and without a
// certificate, a trust bundle or a trust domain STRICT refuses everything: the proxy
// fails closed.
package proxy
