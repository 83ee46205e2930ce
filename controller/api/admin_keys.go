// Admin API for credentials: enrollment tokens for connectors and relays
// (POST /api/v1/connector-tokens, /relay-tokens, /relays) and service
// account keys (POST and DELETE /api/v1/service-accounts/{id}/keys).

package api

import (
	"errors"
	"net/http"
	"time"

	"postern.dev/postern/controller/adminapi"
)

// MintRequest is the body of POST /api/v1/connector-tokens and /relay-tokens.
type MintRequest struct {
	Name       string `json:"name"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
}

// MintResponse carries a printed enrollment token.
type MintResponse struct {
	Token     string    `json:"token"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) credentialRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/relays", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleMint(w, r, adminapi.KindRelay, false) }))
	mux.HandleFunc("POST /api/v1/connector-tokens", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleMint(w, r, adminapi.KindConnector, true) }))
	mux.HandleFunc("POST /api/v1/relay-tokens", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleMint(w, r, adminapi.KindRelay, true) }))
	mux.HandleFunc("POST /api/v1/service-accounts/{id}/keys", s.Admin(s.handleServiceKey))
	mux.HandleFunc("DELETE /api/v1/service-accounts/{id}/keys/{key}", s.Admin(s.handleDeleteServiceKey))
}

// handleMint prints an enrollment token for the connector or relay named in
// the body; without token (POST /api/v1/relays) it answers with the relay and
// its token.
func (s *Server) handleMint(w http.ResponseWriter, r *http.Request, kind string, token bool) {
	var req MintRequest
	if !DecodeJSON(w, r, &req) {
		return
	}
	if req.TTLSeconds < 0 {
		WriteError(w, http.StatusBadRequest, "ttl_seconds: must be positive")
		return
	}
	tok, ttl, err := s.core.MintEnrollmentToken(r.Context(), kind, req.Name, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, ErrUnknownComponent):
			WriteError(w, http.StatusNotFound, "name: %v", err)
		case errors.Is(err, ErrEnrollment):
			WriteError(w, http.StatusBadRequest, "%v", err)
		default:
			WriteError(w, http.StatusInternalServerError, "%v", err)
		}
		return
	}
	if !token {
		v, err := s.core.ObjectView(r.Context(), kind, req.Name)
		if err != nil {
			s.writeObjectError(w, kind, req.Name, err)
			return
		}
		WriteJSON(w, http.StatusCreated, map[string]any{"relay": v, "enrollment_token": tok})
		return
	}
	WriteJSON(w, http.StatusCreated, MintResponse{Token: tok, Kind: kind, Name: req.Name, ExpiresAt: time.Now().Add(ttl).UTC()})
}

// handleServiceKey is POST /api/v1/service-accounts/{id}/keys.
func (s *Server) handleServiceKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTLSeconds int `json:"ttl_seconds,omitempty"`
	}
	if r.ContentLength != 0 && !DecodeJSON(w, r, &req) {
		return
	}
	k, err := s.core.CreateServiceKey(r.Context(), r.PathValue("id"), time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		s.writeObjectError(w, adminapi.KindServiceAccount, r.PathValue("id"), err)
		return
	}
	WriteJSON(w, http.StatusCreated, k)
}

// handleDeleteServiceKey is DELETE /api/v1/service-accounts/{id}/keys/{key}.
func (s *Server) handleDeleteServiceKey(w http.ResponseWriter, r *http.Request) {
	if err := s.core.DeleteServiceKey(r.Context(), r.PathValue("id"), r.PathValue("key")); err != nil {
		s.writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
