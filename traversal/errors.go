package traversal

import "errors"

// Sentinel errors (wrapped with detail).
var (
	ErrNoRelay       = errors.New("no usable relay")
	ErrNoPath        = errors.New("no path to connector")
	ErrSignaling     = errors.New("signaling failed")
	ErrNoCertificate = errors.New("no device certificate in the TLS configuration")
	ErrUnpinnedRelay = errors.New("relay has no TLS certificate digest to pin")
	ErrClosed        = errors.New("closed")
	ErrBadConfig     = errors.New("invalid traversal configuration")
)
