package session

import "errors"

// Sentinel errors of the session. Package client re-exports them under the
// same names; its local API maps them to HTTP statuses and hints.
var (
	ErrBadRequest            = errors.New("bad request")
	ErrNotSignedIn           = errors.New("not signed in")
	ErrControllerUnreachable = errors.New("controller unreachable")
	ErrControllerRefused     = errors.New("controller refused the request")
	ErrUnauthorized          = errors.New("credentials rejected")
	ErrForbidden             = errors.New("not allowed")
	ErrCertificate           = errors.New("certificate does not match the deployment CA")
	ErrTokenInvalid          = errors.New("connection token failed verification")
	ErrClosed                = errors.New("daemon is shutting down")
	// ErrSessionEnded: the controller answered 401 to this session (revoked,
	// device removed, expired); the daemon signs out.
	ErrSessionEnded = errors.New("session ended by the controller: sign in again")
	// ErrNoController: no controller URL given, preset or remembered.
	ErrNoController = errors.New("no controller URL")
)
