package lab

import "errors"

// Sentinel errors of the lab.
var (
	// ErrUnsupported is returned on systems without network namespaces.
	ErrUnsupported = errors.New("the Postern lab needs Linux with network namespaces (ip netns) and nftables")
	// ErrNotRoot is returned when the lab is started without root.
	ErrNotRoot = errors.New("the Postern lab needs root (network namespaces, nftables)")
	// ErrUnknownProgram names a program the lab did not start.
	ErrUnknownProgram = errors.New("unknown lab program")
	// ErrUnknownRouter names a router the lab does not have.
	ErrUnknownRouter = errors.New("unknown lab router")
	// ErrUnknownNATKind names a NAT behaviour the lab's routers lack.
	ErrUnknownNATKind = errors.New("unknown NAT kind")
	// ErrUnknownNode names a node the lab does not have.
	ErrUnknownNode = errors.New("unknown lab node")
	// ErrMissingBinary is returned when a program is missing from the bin directory.
	ErrMissingBinary = errors.New("missing program (run make build)")
	// ErrTimeout is returned when something the lab waits for does not happen.
	ErrTimeout = errors.New("timed out")
	// ErrClosed is returned by a lab after Close.
	ErrClosed = errors.New("lab closed")
)
