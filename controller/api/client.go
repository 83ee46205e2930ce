// Client API (session bearer tokens): sign-in (POST controlapi.PathLogin),
// sign-out (POST controlapi.PathLogout), Connection Tokens (POST
// controlapi.PathConnectionToken) and posture reports (POST
// controlapi.PathPosture); access requests are in access.go and TURN in
// component.go, the second factor in mfa.go and webauthn.go, single sign-on
// in sso.go and the client policy stream in stream.go.

package api

import (
	"context"
	"errors"
	"net/http"

	"postern.dev/postern/controlapi"
)

// Clients signs devices in and authenticates their later requests.
type Clients interface {
	// Login signs a device in from ip. On failure it returns the status to
	// answer with; a throttled sign-in's error has a RetryAfter method.
	Login(ctx context.Context, ip string, req controlapi.LoginRequest) (*controlapi.LoginResponse, int, error)
	// ClientSession is the live session of a session token; its errors
	// say why there is none (401).
	ClientSession(ctx context.Context, token string) (ClientSession, error)
}

// ClientSession is a signed-in device's session.
type ClientSession interface {
	// Logout ends the session.
	Logout(ctx context.Context) error
	// ConnectionToken issues a Connection Token for connector connector
	// (an id or a name). Its errors wrap ErrUnknownComponent,
	// ErrNotAllowed or ErrNoDigest when refused.
	ConnectionToken(connector string) (*controlapi.TokenResponse, error)
	// TURNCredentials are TURN credentials bound to this device;
	// ErrNothingToRelay when no resource of its account is served by a
	// connector.
	TURNCredentials() (controlapi.TURNCredentials, error)
	// ReportPosture records the device's signed posture report (when its
	// facts changed) and answers the verdict for every profile. A report
	// refused wraps ErrPostureReport.
	ReportPosture(ctx context.Context, signed controlapi.SignedPosture) (controlapi.PostureVerdict, error)
	// AccessRequests lists the requests of this account and those it may
	// decide, newest first.
	AccessRequests() []controlapi.AccessRequest
	// RequestAccess files a pending access request (errors wrap
	// ErrRequest when it is refused).
	RequestAccess(ctx context.Context, req controlapi.AccessRequestCreate) (controlapi.AccessRequest, error)
	// DecideAccessRequest approves or denies request id (verb "approve" or
	// "deny") as this account, an approver of its resource.
	DecideAccessRequest(ctx context.Context, id, verb string, dec controlapi.AccessDecision) (controlapi.AccessRequest, error)
	// Person reports whether the account is a user (a person), not a
	// service account: only people have a second factor.
	Person() bool
	// PolicyFeed is the feed of the device's client policy stream.
	PolicyFeed() PolicyFeed
	MFA
}

var (
	// ErrNotAllowed: the caller may not have what it asks for (403).
	ErrNotAllowed = errors.New("not allowed")
	// ErrNoDigest: a connector has not reported its certificate yet (409).
	ErrNoDigest = errors.New("connector has not reported its certificate yet (no heartbeat); try again shortly")
	// ErrPostureReport: a posture report refused (400).
	ErrPostureReport = errors.New("posture report")
)

func (s *Server) clientRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+controlapi.PathLogin, s.handleLogin)
	mux.HandleFunc("POST "+controlapi.PathLogout, s.handleLogout)
	mux.HandleFunc("POST "+controlapi.PathConnectionToken, s.handleConnectionToken)
	mux.HandleFunc("POST "+controlapi.PathPosture, s.handlePosture)
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req controlapi.LoginRequest
	if !DecodeJSON(w, r, &req) {
		return
	}
	resp, status, err := s.core.Login(r.Context(), ClientIP(r), req)
	switch {
	case err != nil && status == http.StatusTooManyRequests:
		writeThrottled(w, err)
		return
	case err != nil:
		WriteError(w, status, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

// session authenticates a client request by its bearer session token; on
// failure it has answered 401.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (ClientSession, bool) {
	cs, err := s.core.ClientSession(r.Context(), Bearer(r))
	if err != nil {
		WriteError(w, http.StatusUnauthorized, "%v", err)
		return nil, false
	}
	return cs, true
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	if err := cs.Logout(r.Context()); err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleConnectionToken(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	var req controlapi.TokenRequest
	if !DecodeJSON(w, r, &req) {
		return
	}
	if req.ConnectorID == "" {
		WriteError(w, http.StatusBadRequest, "connector_id: required")
		return
	}
	resp, err := cs.ConnectionToken(req.ConnectorID)
	switch {
	case err == nil:
		WriteJSON(w, http.StatusOK, resp)
	case errors.Is(err, ErrUnknownComponent):
		WriteError(w, http.StatusNotFound, "connector_id: %v", err)
	case errors.Is(err, ErrNotAllowed):
		WriteError(w, http.StatusForbidden, "%v", err)
	case errors.Is(err, ErrNoDigest):
		WriteError(w, http.StatusConflict, "%v", err)
	default:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}

func (s *Server) handlePosture(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	var signed controlapi.SignedPosture
	if !DecodeJSON(w, r, &signed) {
		return
	}
	v, err := cs.ReportPosture(r.Context(), signed)
	switch {
	case errors.Is(err, ErrPostureReport):
		WriteError(w, http.StatusBadRequest, "%v", err)
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	default:
		WriteJSON(w, http.StatusOK, v)
	}
}
