package client

import (
	"errors"

	"postern.dev/postern/client/session"
)

// Sentinel errors. The local API maps them to HTTP statuses and hints. The
// session's own are package session's, under the same names.
var (
	ErrBadRequest            = session.ErrBadRequest
	ErrNotSignedIn           = session.ErrNotSignedIn
	ErrControllerUnreachable = session.ErrControllerUnreachable
	ErrControllerRefused     = session.ErrControllerRefused
	ErrUnauthorized          = session.ErrUnauthorized
	ErrForbidden             = session.ErrForbidden
	ErrCertificate           = session.ErrCertificate
	ErrNoResource            = errors.New("no resource matches this destination")
	ErrPortNotAllowed        = errors.New("port or protocol not allowed for this resource")
	ErrNoConnector           = errors.New("no connector of the resource's remote network is online")
	ErrTokenInvalid          = session.ErrTokenInvalid
	ErrConnectorRejected     = errors.New("connector rejected the connection token")
	ErrDown                  = errors.New("tunnel is down")
	ErrClosed                = session.ErrClosed
	ErrSessionEnded          = session.ErrSessionEnded
	ErrNoController          = session.ErrNoController
)
