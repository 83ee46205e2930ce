package platform

import "errors"

// Sentinel errors of this package (with ErrUnsupported, which the shared
// contract in platform.go declares).
var (
	// ErrRangeConflict: a synthetic or resource range overlaps a route or
	// address already on the machine.
	ErrRangeConflict = errors.New("platform: range conflicts with the machine's network")
	// ErrDNSState: the saved DNS state (for restore after a crash) is
	// missing, unreadable or inconsistent.
	ErrDNSState = errors.New("platform: DNS state")
	// ErrDNSConfig: the OS DNS configuration could not be read or changed.
	ErrDNSConfig = errors.New("platform: DNS configuration")
	// ErrRoute: addresses or routes could not be set.
	ErrRoute = errors.New("platform: routes")
)
