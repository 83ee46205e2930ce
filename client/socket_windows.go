package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"

	"postern.dev/postern/localapi"
)

// pipeSDDL is the named pipe's security descriptor: full access for
// LocalSystem (the service) and Administrators, read/write for interactive
// users (the signed-in desktop user's CLI and tray, as on Twingate and
// Tailscale), nothing for network logons, services or anonymous callers.
// Protected (P): nothing is inherited.
const pipeSDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)"

// listenSocket serves the local API on the named pipe that stands for path
// (localapi.PipeName): Windows has no Unix-socket peer credentials, so the
// pipe's ACL is what admits callers. A group (--socket-group) is not
// supported here.
func listenSocket(path string, gid int) (net.Listener, error) {
	if gid >= 0 {
		return nil, errors.New("--socket-group is not supported on Windows: the local API pipe admits Administrators and interactive users")
	}
	name := localapi.PipeName(path)
	ln, err := winio.ListenPipe(name, &winio.PipeConfig{SecurityDescriptor: pipeSDDL, InputBufferSize: 64 << 10, OutputBufferSize: 64 << 10})
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_PIPE_BUSY) {
			return nil, fmt.Errorf("another posternd is already serving %s (pipe %s)", path, name)
		}
		return nil, fmt.Errorf("listen on pipe %s (for %s): %w", name, path, err)
	}
	return ln, nil
}

// checkPeer: the pipe's ACL admits callers (see pipeSDDL).
func checkPeer(c net.Conn) error { return nil }

// dialSocket connects to the local API pipe that stands for path.
func dialSocket(path string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return winio.DialPipeContext(ctx, localapi.PipeName(path))
}
