package oidcauth

import (
	"errors"
	"net/http"
)

// Sentinel errors. Errors returned by this package wrap one of them, so the
// controller can map them onto HTTP statuses (see docs/sso.md):
// ErrBadRequest 400, ErrRefused and ErrRevoked 403, ErrExpired 410,
// ErrPending and ErrSlowDown 200 with a pending status, ErrIdP 502.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("oidc configuration")
	// ErrBadRequest: the caller's input is malformed (flow handle, redirect
	// URI, PKCE challenge or verifier, state).
	ErrBadRequest = errors.New("invalid sign-in request")
	// ErrExpired: the flow or the device code expired; start again.
	ErrExpired = errors.New("sign-in expired")
	// ErrRefused: the identity provider or the user refused the sign-in, or
	// the ID token did not verify (issuer, audience, expiry, nonce, signature).
	ErrRefused = errors.New("sign-in refused")
	// ErrPending: the user has not yet approved the device sign-in.
	ErrPending = errors.New("authorization pending")
	// ErrSlowDown: the device poll came too fast; wait longer.
	ErrSlowDown = errors.New("polling too fast")
	// ErrRevoked: at a refresh, the identity provider no longer vouches for
	// the user (invalid_grant or similar): end the user's sessions.
	ErrRevoked = errors.New("identity provider no longer vouches for the user")
	// ErrIdP: the identity provider could not be reached or answered
	// unexpectedly; nothing is decided (fail static).
	ErrIdP = errors.New("identity provider unavailable")
)

// StatusCode is the HTTP status the controller answers for an error of this
// package (device polls answer ErrPending and ErrSlowDown with 200 and a
// pending status instead, see controlapi.OIDCDevicePollResponse).
func StatusCode(err error) int {
	switch {
	case err == nil, errors.Is(err, ErrPending), errors.Is(err, ErrSlowDown):
		return http.StatusOK
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrRefused), errors.Is(err, ErrRevoked):
		return http.StatusForbidden
	case errors.Is(err, ErrExpired):
		return http.StatusGone
	case errors.Is(err, ErrConfig):
		return http.StatusNotImplemented
	}
	return http.StatusBadGateway
}
