package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// Core is everything the handlers of this package ask of the controller;
// *controller.Controller implements it.
type Core interface {
	Auth
	Status
	Logs
	Credentials
	Admins
	Objects
	Components
	Clients
	AccessRequests
	Policies
	SSO
	WebAuthn
}

// Auth authenticates callers for the guards (Server.Admin, Server.Component).
type Auth interface {
	// AuthorizeAdmin authenticates the caller of an admin route (a bearer
	// token, or the console session already in the request context),
	// checks that its role may call the route (r.Pattern) and returns the
	// context to serve it with. Its errors: ErrAdminAuth, alone or wrapped
	// with the reason (401); *Forbidden (403); anything else (500).
	AuthorizeAdmin(r *http.Request) (context.Context, error)
	// ComponentIdentity returns the kind ("connector", "relay") and id of
	// an mTLS caller whose certificate is for the key it enrolled with.
	ComponentIdentity(r *http.Request) (kind, id string, err error)
}

// Logs reads the audit log and the stored flow events, oldest first, from
// the entry after after.
type Logs interface {
	AuditLog(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error)
	FlowEvents(ctx context.Context, after int64, limit int) ([]store.Event, error)
}

// Credentials mints and removes the credentials of components and service
// accounts.
type Credentials interface {
	// MintEnrollmentToken makes a single-use enrollment token for the
	// connector or relay called name, valid for ttl (0: the configured
	// default), and returns it and the ttl it used. Its errors wrap
	// ErrUnknownComponent or ErrEnrollment when the request is refused.
	MintEnrollmentToken(ctx context.Context, kind, name string, ttl time.Duration) (string, time.Duration, error)
	// ObjectView is the object of kind with id or name key as the admin
	// API shows it; errors are the lookup's (store.ErrNotFound), and an
	// object that no longer decodes shows as nil.
	ObjectView(ctx context.Context, kind, key string) (any, error)
	// CreateServiceKey makes a key for the service account named or with
	// id account (ttl 0: no expiry); its secret is only in this answer.
	CreateServiceKey(ctx context.Context, account string, ttl time.Duration) (*controlapi.ServiceKey, error)
	// DeleteServiceKey removes key keyID of the service account named or
	// with id account, ending the sessions it opened. Its errors are
	// *ObjectError, naming the object that failed.
	DeleteServiceKey(ctx context.Context, account, keyID string) error
	// BadInput reports whether err is the caller's invalid input (400).
	BadInput(err error) bool
}

// Admins manages the admins of the admin API and console, their API tokens
// and their console sessions. Bad input wraps ErrAdminInput.
type Admins interface {
	// WhoAmI describes the admin AuthorizeAdmin put in ctx.
	WhoAmI(ctx context.Context) MeView
	ListAdmins(ctx context.Context) ([]AdminView, error)
	AddAdmin(ctx context.Context, name, role, password string) (*AdminView, error)
	UpdateAdmin(ctx context.Context, key, role, password string) (*AdminView, error)
	RemoveAdmin(ctx context.Context, key string) error
	ListAdminTokens(ctx context.Context) ([]AdminTokenView, error)
	CreateAdminToken(ctx context.Context, key, role, name string, ttl time.Duration) (*AdminTokenView, error)
	ListAdminSessions(ctx context.Context) ([]AdminSessionView, error)
	// RevokeAdminCredential removes an admin token (kind "admin_token")
	// or console session (kind "admin_session") by id.
	RevokeAdminCredential(ctx context.Context, kind, id string) error
}

// Errors whose status the API decides; the core returns them (wrapped).
var (
	// ErrAdminAuth: no or unknown admin credentials (401).
	ErrAdminAuth = errors.New("admin credentials required")
	// ErrAdminInput: bad input to the admin-management API (400).
	ErrAdminInput = errors.New("invalid admin request")
	// ErrUnknownComponent: no such connector or relay (404 when minting,
	// 401 for a component's own certificate).
	ErrUnknownComponent = errors.New("unknown component")
	// ErrEnrollment: an enrollment refused (400).
	ErrEnrollment = errors.New("enrollment refused")
	// ErrUnauthenticated: a sign-in with wrong credentials.
	ErrUnauthenticated = errors.New("not signed in")
	// ErrThrottled: a sign-in refused after too many failed ones.
	ErrThrottled = errors.New("too many attempts")
)

// Forbidden is an authenticated admin calling a route their role does not
// allow (403).
type Forbidden struct{ Msg string }

func (f *Forbidden) Error() string { return f.Msg }

// ObjectError is a failure about one object, for the message of its status
// (404: `kind "key" not found`).
type ObjectError struct {
	Kind, Key string
	Err       error
}

func (e *ObjectError) Error() string { return e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }
