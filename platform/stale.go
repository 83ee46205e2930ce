package platform

import (
	"errors"
	"os"
)

// HasCrashState reports whether stateDir holds the record of a DNS change
// that was not undone (the daemon was killed); RestoreAfterCrash undoes it.
func HasCrashState(stateDir string) bool {
	_, err := os.Stat(statePath(stateDir))
	return err == nil || !errors.Is(err, os.ErrNotExist)
}

// RemoveStaleRoutes deletes the routes Postern added to device tunName that
// are still there although no daemon runs (posternd --restore after a
// crash). On Linux a TUN device, and its routes, normally vanish with the
// process that opened it; a device kept by something else (a persistent TUN,
// a stuck process) keeps its routes, which are recognised by their protocol
// (proto 88). Elsewhere the routes go with the interface (utun, wintun) and
// there is nothing to do. It returns how many routes it removed; a missing
// device is not an error.
func RemoveStaleRoutes(tunName string) (int, error) { return removeStaleRoutes(tunName) }
