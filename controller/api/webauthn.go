// Security keys (WebAuthn) as a second factor: the client's begin, poll and
// remove endpoints (session token: POST controlapi.PathMFAWebAuthn, GET
// controlapi.PathMFAWebAuthn+"/{id}", POST controlapi.PathMFAWebAuthn+
// "/remove"), the browser's options and finish endpoints (the ceremony's
// secret: POST controlapi.PathWebAuthnOptions, controlapi.PathWebAuthnFinish)
// and the static page that runs navigator.credentials (GET
// controlapi.PathWebAuthnPage; no inline script, so it works under a strict
// Content-Security-Policy).

package api

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"

	"postern.dev/postern/controlapi"
)

// WebAuthnSession is the security-key side of a person's session (MFA).
type WebAuthnSession interface {
	// BeginWebAuthn starts a ceremony (register: add a key, else a
	// step-up) and answers it with the URL of its page. On failure it
	// returns the status to answer with.
	BeginWebAuthn(ctx context.Context, register bool) (controlapi.WebAuthnCeremony, int, error)
	// WebAuthnCeremony is ceremony id of this session, with the second
	// factor's status once it is done; ErrNoCeremony when the session has
	// none of that id.
	WebAuthnCeremony(ctx context.Context, id string) (controlapi.WebAuthnCeremony, error)
	// RemoveSecurityKeys removes all of the user's security keys; it needs
	// a recent step-up. Refusals: ErrNoSecurityKey, *Forbidden.
	RemoveSecurityKeys(ctx context.Context) error
}

// WebAuthn runs the browser's side of a ceremony, named by its secret. On
// failure its methods return the status to answer with.
type WebAuthn interface {
	WebAuthnOptions(ctx context.Context, secret string) (controlapi.WebAuthnOptions, int, error)
	FinishWebAuthn(ctx context.Context, req controlapi.WebAuthnFinish) (controlapi.WebAuthnCeremony, int, error)
}

// Errors of security keys.
var (
	// ErrNoCeremony: no ceremony of that id in this session (404).
	ErrNoCeremony = errors.New("no such WebAuthn ceremony")
	// ErrNoSecurityKey: the user has no security key (404).
	ErrNoSecurityKey = errors.New("no security key enrolled (postern mfa enroll --webauthn)")
)

//go:embed webauthn_page
var webauthnFiles embed.FS

func (s *Server) webauthnRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+controlapi.PathMFAWebAuthn, s.handleWebAuthnBegin)
	mux.HandleFunc("GET "+controlapi.PathMFAWebAuthn+"/{id}", s.handleWebAuthnStatus)
	mux.HandleFunc("POST "+controlapi.PathMFAWebAuthn+"/remove", s.handleWebAuthnRemove)
	mux.HandleFunc("POST "+controlapi.PathWebAuthnOptions, s.handleWebAuthnOptions)
	mux.HandleFunc("POST "+controlapi.PathWebAuthnFinish, s.handleWebAuthnFinish)
	mux.Handle("GET "+controlapi.PathWebAuthnPage, webauthnPageHandler())
}

// webauthnPageHandler serves the ceremony page and its script.
func webauthnPageHandler() http.Handler {
	sub, err := fs.Sub(webauthnFiles, "webauthn_page")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	files := http.StripPrefix(controlapi.PathWebAuthnPage, http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		files.ServeHTTP(w, r)
	})
}

func (s *Server) handleWebAuthnBegin(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.person(w, r)
	if !ok {
		return
	}
	var req controlapi.WebAuthnBegin
	if !DecodeJSON(w, r, &req) {
		return
	}
	v, status, err := cs.BeginWebAuthn(r.Context(), req.Register)
	if err != nil {
		WriteError(w, status, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

// handleWebAuthnStatus answers a ceremony of the caller's session.
func (s *Server) handleWebAuthnStatus(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.person(w, r)
	if !ok {
		return
	}
	v, err := cs.WebAuthnCeremony(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNoCeremony):
		WriteError(w, http.StatusNotFound, "no WebAuthn ceremony %q of this session", r.PathValue("id"))
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	default:
		WriteJSON(w, http.StatusOK, v)
	}
}

// handleWebAuthnRemove removes all of the user's security keys.
func (s *Server) handleWebAuthnRemove(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.person(w, r)
	if !ok {
		return
	}
	var req struct{}
	if !DecodeJSON(w, r, &req) {
		return
	}
	var fb *Forbidden
	switch err := cs.RemoveSecurityKeys(r.Context()); {
	case errors.Is(err, ErrNoSecurityKey):
		WriteError(w, http.StatusNotFound, "%v", err)
	case errors.As(err, &fb):
		WriteError(w, http.StatusForbidden, "%s", fb.Msg)
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) handleWebAuthnOptions(w http.ResponseWriter, r *http.Request) {
	var req controlapi.WebAuthnSecret
	if !DecodeJSON(w, r, &req) {
		return
	}
	opts, status, err := s.core.WebAuthnOptions(r.Context(), req.Secret)
	if err != nil {
		WriteError(w, status, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, opts)
}

func (s *Server) handleWebAuthnFinish(w http.ResponseWriter, r *http.Request) {
	var req controlapi.WebAuthnFinish
	if !DecodeJSON(w, r, &req) {
		return
	}
	v, status, err := s.core.FinishWebAuthn(r.Context(), req)
	if err != nil {
		WriteError(w, status, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, v)
}
