package dnsproxy

import "errors"

// Sentinel errors of this package; every error returned wraps one of them.
var (
	// ErrConfig: the Config is invalid (the message names the field).
	ErrConfig = errors.New("dnsproxy: invalid configuration")
	// ErrRangeFull: every synthetic address is in use and none could be
	// reclaimed.
	ErrRangeFull = errors.New("dnsproxy: synthetic address range exhausted")
	// ErrState: the state file could not be read or written.
	ErrState = errors.New("dnsproxy: state file")
	// ErrNoUpstream: there is no upstream resolver to forward to.
	ErrNoUpstream = errors.New("dnsproxy: no upstream resolver")
	// ErrUpstream: every upstream failed or timed out.
	ErrUpstream = errors.New("dnsproxy: upstream resolvers failed")
)
