package sso

import "errors"

// Sentinel errors; returned errors wrap one of them.
var (
	// ErrNotConfigured: the controller has no identity provider configured.
	ErrNotConfigured = errors.New("single sign-on is not configured on this controller")
	// ErrRefused: the user or the identity provider refused the sign-in.
	ErrRefused = errors.New("sign-in refused")
	// ErrExpired: the sign-in took too long; start again.
	ErrExpired = errors.New("sign-in expired")
	// ErrController: the controller failed or answered unexpectedly.
	ErrController = errors.New("controller error")
)
