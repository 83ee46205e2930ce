// The second factor of a person's session (session token): status (GET
// controlapi.PathMFA), TOTP enrollment (POST controlapi.PathMFAEnroll),
// verification, a step-up (POST controlapi.PathMFAVerify) and removal (POST
// controlapi.PathMFA + "/remove"). Security keys (WebAuthn) are in
// webauthn.go.

package api

import (
	"context"
	"errors"
	"net/http"

	"postern.dev/postern/controlapi"
)

// MFA is the second factor of a session whose account is a person
// (ClientSession.Person); its methods are only called for those.
type MFA interface {
	// MFAStatus is the account's second factor and the session's last
	// step-up.
	MFAStatus() controlapi.MFAStatus
	// EnrollTOTP makes a new TOTP secret, replacing an unconfirmed one. It
	// refuses with ErrMFAEnrolled or a *Forbidden.
	EnrollTOTP(ctx context.Context) (controlapi.MFAEnrollResponse, error)
	// VerifyMFA checks code, confirms a pending enrollment and records the
	// step-up; it answers the new status. Its refusals wrap ErrMFACode,
	// ErrMFAThrottled or ErrMFANotSetUp.
	VerifyMFA(ctx context.Context, code string) (controlapi.MFAStatus, error)
	// RemoveMFA removes the enrollment; a confirmed one needs code (or a
	// recent step-up). Refusals as VerifyMFA's, or a *Forbidden.
	RemoveMFA(ctx context.Context, code string) error
	WebAuthnSession
}

// Errors of the second factor, with their statuses.
var (
	ErrMFACode      = errors.New("wrong or already used code")                     // 403
	ErrMFAThrottled = errors.New("too many wrong codes")                           // 429
	ErrMFANotSetUp  = errors.New("no second factor enrolled (postern mfa enroll)") // 404
	// ErrMFAEnrolled: a confirmed second factor must be removed before a new
	// one is enrolled (409).
	ErrMFAEnrolled = errors.New("a second factor is already enrolled; remove it first (postern mfa remove)")
)

func (s *Server) mfaRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathMFA, s.handleMFAStatus)
	mux.HandleFunc("POST "+controlapi.PathMFA+"/remove", s.withCode(func(ctx context.Context, cs ClientSession, code string) (any, error) {
		return nil, cs.RemoveMFA(ctx, code)
	}))
	mux.HandleFunc("POST "+controlapi.PathMFAEnroll, s.handleMFAEnroll)
	mux.HandleFunc("POST "+controlapi.PathMFAVerify, s.withCode(func(ctx context.Context, cs ClientSession, code string) (any, error) {
		return cs.VerifyMFA(ctx, code)
	}))
}

// person authenticates a client request whose account must be a person;
// otherwise it has answered (401, 403).
func (s *Server) person(w http.ResponseWriter, r *http.Request) (ClientSession, bool) {
	cs, ok := s.session(w, r)
	if !ok {
		return nil, false
	}
	if !cs.Person() {
		WriteError(w, http.StatusForbidden, "a second factor is for people; service accounts have none")
		return nil, false
	}
	return cs, true
}

func writeMFAError(w http.ResponseWriter, err error) {
	var fb *Forbidden
	switch {
	case errors.As(err, &fb):
		WriteError(w, http.StatusForbidden, "%s", fb.Msg)
	case errors.Is(err, ErrMFAThrottled):
		WriteError(w, http.StatusTooManyRequests, "%v", err)
	case errors.Is(err, ErrMFACode):
		WriteError(w, http.StatusForbidden, "%v", err)
	case errors.Is(err, ErrMFANotSetUp):
		WriteError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrMFAEnrolled):
		WriteError(w, http.StatusConflict, "%v", err)
	default:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}

func (s *Server) handleMFAStatus(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.person(w, r)
	if !ok {
		return
	}
	WriteJSON(w, http.StatusOK, cs.MFAStatus())
}

func (s *Server) handleMFAEnroll(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.person(w, r)
	if !ok {
		return
	}
	resp, err := cs.EnrollTOTP(r.Context())
	if err != nil {
		writeMFAError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

// withCode serves a verify or remove: a person's request with a code; act
// answers the new status (200) or nothing (204).
func (s *Server) withCode(act func(ctx context.Context, cs ClientSession, code string) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cs, ok := s.person(w, r)
		if !ok {
			return
		}
		var req controlapi.MFAVerifyRequest
		if !DecodeJSON(w, r, &req) {
			return
		}
		v, err := act(r.Context(), cs, req.Code)
		switch {
		case err != nil:
			writeMFAError(w, err)
		case v == nil:
			w.WriteHeader(http.StatusNoContent)
		default:
			WriteJSON(w, http.StatusOK, v)
		}
	}
}
