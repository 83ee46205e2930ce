package connector

import "errors"

// Sentinel errors of the connector.
var (
	// ErrNotEnrolled means the state directory holds no connector credential.
	ErrNotEnrolled = errors.New("connector is not enrolled (run with --token once)")
	// ErrWrongTokenKind means an enrollment token for another component was given.
	ErrWrongTokenKind = errors.New("enrollment token is not a connector token")
	// ErrEnrollRefused means the controller refused the enrollment token.
	ErrEnrollRefused = errors.New("controller refused the enrollment token")
	// ErrNoPolicy means no policy has been received (or loaded) yet.
	ErrNoPolicy = errors.New("no policy received from the controller yet")
	// ErrWrongDigest means a Connection Token names a certificate this
	// connector does not serve (or not the one presented on the connection).
	ErrWrongDigest = errors.New("connection token is for another connector certificate")
	// ErrWrongBinding means the token's cnf.jkt is not the TLS client key.
	ErrWrongBinding = errors.New("connection token is bound to another device key")
	// ErrRevoked means the token's device has been revoked.
	ErrRevoked = errors.New("device is revoked")
	// ErrPrincipalChanged means a refresh token names another principal or device.
	ErrPrincipalChanged = errors.New("refreshed token names another principal or device")
	// ErrClosed means the connector has been closed.
	ErrClosed = errors.New("connector closed")
)
