package relay

import "errors"

// Sentinel errors (wrapped with detail).
var (
	ErrNotRegistered  = errors.New("relay has no credentials from the controller yet")
	ErrBadCredential  = errors.New("bad TURN credential")
	ErrExpired        = errors.New("TURN credential expired")
	ErrQuota          = errors.New("per-principal quota exceeded")
	ErrForbiddenPeer  = errors.New("peer address not allowed")
	ErrRevoked        = errors.New("access revoked by the controller")
	ErrUnauthorized   = errors.New("signaling peer not authorized")
	ErrNotConnected   = errors.New("connector is not connected to this relay")
	ErrBadConfig      = errors.New("invalid relay configuration")
	ErrNotEnrolled    = errors.New("relay is not enrolled: pass --token")
	ErrControllerCall = errors.New("controller request failed")
)
