//go:build !windows

package localapi

import (
	"context"
	"net"
)

// dialLocal connects to the daemon's Unix socket.
func dialLocal(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
