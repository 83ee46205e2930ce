package localapi

import (
	"context"
	"net"

	"github.com/Microsoft/go-winio"
)

// dialLocal connects to the daemon's named pipe (see PipeName).
func dialLocal(ctx context.Context, path string) (net.Conn, error) {
	return winio.DialPipeContext(ctx, PipeName(path))
}
