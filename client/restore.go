package client

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"postern.dev/postern/localapi"
	"postern.dev/postern/platform"
)

// ErrDaemonRunning: posternd --restore refuses to undo the configuration of
// a daemon that is still running.
var ErrDaemonRunning = errors.New("posternd is running")

// RestoreResult says what Restore undid.
type RestoreResult struct {
	// DNS is true when a DNS change left by a killed daemon was undone.
	DNS bool
	// Routes is how many stale routes were removed from the TUN device.
	Routes int
}

// Nothing reports whether there was nothing to undo.
func (r RestoreResult) Nothing() bool { return !r.DNS && r.Routes == 0 }

// Restore undoes what a crashed daemon with this state directory left
// behind (posternd --restore): the OS resolver configuration
// (platform.RestoreAfterCrash: resolv.conf, systemd-resolved link settings,
// /etc/resolver files, NRPT rules) and Postern's routes still on device
// tunName (platform.RemoveStaleRoutes). It refuses while a daemon answers on
// socket (default STATE/posternd.sock): that daemon restores everything
// itself when it stops. Nothing to do is not an error.
func Restore(stateDir, socket, tunName string) (RestoreResult, error) {
	var res RestoreResult
	if stateDir == "" {
		return res, errors.New("restore: no state directory")
	}
	if socket == "" {
		socket = filepath.Join(stateDir, localapi.SocketName)
	}
	if daemonServing(socket) {
		return res, fmt.Errorf("%w on %s: stop it first (it restores DNS and removes its routes itself when it stops)", ErrDaemonRunning, socket)
	}
	var errs []error
	if platform.HasCrashState(stateDir) {
		if err := platform.RestoreAfterCrash(stateDir); err != nil {
			errs = append(errs, fmt.Errorf("restore DNS: %w", err))
		} else {
			res.DNS = true
		}
	}
	if tunName != "" {
		n, err := platform.RemoveStaleRoutes(tunName)
		res.Routes = n
		if err != nil {
			errs = append(errs, fmt.Errorf("remove stale routes: %w", err))
		}
	}
	return res, errors.Join(errs...)
}

// daemonServing reports whether something accepts connections on the local
// API socket (or named pipe).
func daemonServing(socket string) bool {
	c, err := dialSocket(socket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
