//go:build !linux

package connector

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// dialTCPDirect opens a TCP connection to ap for a flow (dial_linux.go has
// the fast path).
func dialTCPDirect(ctx context.Context, ap netip.AddrPort, keepAlive time.Duration) (net.Conn, error) {
	return (&net.Dialer{KeepAlive: keepAlive}).DialContext(ctx, "tcp", ap.String())
}
