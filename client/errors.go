package client

import (
	"errors"

	"github.com/quic-go/quic-go"

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

// refusedHint explains a QUIC CONNECTION_REFUSED from a connector: it
// refuses new connections while too many are awaiting a token (its
// --max-pending-conns and --max-pending-per-address), and the pool retries
// with backoff. Empty for any other error.
func refusedHint(err error) string {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused {
		return " (the connector is refusing new connections: too many from this address or in all are still awaiting a token; retrying)"
	}
	return ""
}
