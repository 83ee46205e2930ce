package console

import (
	"context"
	"net/http"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/oidcauth"
)

// Core is what the console asks of the controller beyond the admin API it
// calls in-process; *controller.Controller implements it. The console
// reuses the admin API's interfaces where they fit (Admins to end its own
// session, Credentials to tell whether an object exists, SSO for the
// identity provider).
type Core interface {
	api.Admins
	api.Credentials
	api.SSO
	Sessions
	Model
}

// Sessions signs admins in to the console and resolves its cookie.
type Sessions interface {
	// ConsoleSession resolves the secret of a console cookie to its live
	// session: the context to serve the request with (it carries the admin
	// for the admin API) and the admin as the console shows them. Its
	// error wraps api.ErrAdminAuth when there is no live session.
	ConsoleSession(r *http.Request, secret string) (context.Context, *Admin, error)
	// ConsoleSignIn checks an admin's password (throttled per name and
	// address, and audited) and starts a console session; it returns the
	// cookie's secret. Its errors wrap api.ErrThrottled or
	// api.ErrUnauthenticated when the sign-in is refused.
	ConsoleSignIn(ctx context.Context, r *http.Request, name, password string) (string, error)
	// ConsoleSSO reports whether admins may sign in with single sign-on.
	ConsoleSSO() bool
	// ConsoleOIDCProvider is the identity provider for the end of a
	// console sign-in (the callback), without the rate limit of its start
	// (api.SSO.OIDCProvider).
	ConsoleOIDCProvider() (api.OIDCProvider, error)
	// ConsoleSSOSignIn maps a verified identity to an admin (created at
	// the first sign-in, its role following the identity's groups) and
	// starts a console session; it returns the cookie's secret. Its error
	// wraps api.ErrNotAllowed when the identity may not administer.
	ConsoleSSOSignIn(ctx context.Context, r *http.Request, id *oidcauth.Identity) (string, error)
}

// Model is what the pages show of the controller's model beyond the admin
// API, and the checks of the configuration forms.
type Model interface {
	// AppliedFile is what the last apply declared (nil: none).
	AppliedFile(ctx context.Context) *AppliedFile
	// DevicePosture is a device's latest posture report and the posture
	// profiles it satisfies or fails.
	DevicePosture(deviceID string) DevicePosture
	// CheckSpec validates a configuration (the JSON of the admin API's
	// /api/v1/spec) as apply does; its error is apply's message.
	CheckSpec(spec []byte) error
	// PlanText renders an apply's plan (the admin API's answer) for people.
	PlanText(plan []byte) (string, error)
	// HashPassword hashes a password as the controller stores it.
	HashPassword(pw string) (string, error)
	// IsPasswordHash reports whether h is a password hash the controller
	// accepts.
	IsPasswordHash(h string) bool
}

// Admin is the signed-in admin as the console shows them, with what their
// role may do (the admin API checks it again on every call).
type Admin struct {
	Name, Role string
	SessionID  string
	// Read: the configuration, state, audit log and events; Write: change
	// the configuration; Approve: decide access requests; Admins: manage
	// admins.
	Read, Write, Approve, Admins bool
}

// capability is one of an Admin's rights, for the pages' checks.
type capability int

const (
	capRead capability = iota
	capWrite
	capApprove
	capAdmins
)

func (a *Admin) can(c capability) bool {
	if a == nil {
		return false
	}
	switch c {
	case capRead:
		return a.Read
	case capWrite:
		return a.Write
	case capApprove:
		return a.Approve
	case capAdmins:
		return a.Admins
	}
	return false
}

// AppliedFile is the record of the last apply: when, by whom, and the
// objects it declared ("kind/name"), which its next apply overwrites.
type AppliedFile struct {
	At      time.Time
	Actor   string
	Objects []string
}

// managed is the set of the record's objects (empty for nil).
func (a *AppliedFile) managed() map[string]bool {
	set := map[string]bool{}
	if a != nil {
		for _, o := range a.Objects {
			set[o] = true
		}
	}
	return set
}

// DevicePosture is a device's posture: its latest report (nil: none yet)
// and the profiles it satisfies, and those it fails with why.
type DevicePosture struct {
	Report    *controlapi.PostureReport
	Reported  time.Time
	Satisfied []string
	Failed    map[string]string
}
