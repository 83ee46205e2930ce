//go:build !linux

package traversal

import "net"

// lowTTLPrimer has no per-packet TTL outside Linux; changing the socket's
// TTL around one write would also shorten QUIC packets written at the same
// moment, so there is no primer: these clients rely on the connector (Linux)
// priming its own NAT first and holding its checks until theirs arrive.
func lowTTLPrimer(*net.UDPConn) func(b []byte, to *net.UDPAddr) error { return nil }
