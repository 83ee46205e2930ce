package bench

import (
	"errors"

	"postern.dev/postern/lab"
)

// Sentinel errors of the harness.
var (
	// ErrUnsupported is returned on systems without network namespaces.
	ErrUnsupported = errors.New("the benchmark needs Linux with network namespaces, nftables and tc")
	// ErrNotRoot is returned when the harness runs without root.
	ErrNotRoot = errors.New("the benchmark needs root (network namespaces, nftables, tc)")
	// ErrMissingTool names a program the harness needs and cannot find.
	ErrMissingTool = errors.New("missing program")
	// ErrTunnelDown is returned when a tunnel under test is not usable.
	ErrTunnelDown = errors.New("tunnel not usable")
	// ErrTimeout is returned when something the harness waits for does not
	// happen; it is the lab's, as the harness also waits through lab.WaitFor.
	ErrTimeout = lab.ErrTimeout
	// ErrBadAgentArgs is returned for a malformed agent command line.
	ErrBadAgentArgs = errors.New("bad agent arguments")
)
