// Admin API for the admins themselves: who am I (GET /api/v1/me), admins,
// their API tokens and their console sessions.

package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/store"
)

// Admin-management API paths.
const (
	PathAdmins        = "/api/v1/admins"
	PathAdminTokens   = "/api/v1/admin-tokens"
	PathAdminSessions = "/api/v1/admin-sessions"
	PathAdminMe       = "/api/v1/me"
)

// AdminRequest is the body of POST /api/v1/admins and PUT /api/v1/admins/{id}.
type AdminRequest struct {
	Name     string `json:"name,omitempty"`
	Role     string `json:"role,omitempty"`
	Password string `json:"password,omitempty"`
}

// AdminTokenRequest is the body of POST /api/v1/admin-tokens.
type AdminTokenRequest struct {
	Admin      string `json:"admin"` // name or id
	Role       string `json:"role,omitempty"`
	Name       string `json:"name,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
}

// MeView is GET /api/v1/me: who the caller is.
type MeView struct {
	Name string `json:"name"`
	Role string `json:"role"`
	Via  string `json:"via"`
}

// AdminView is an admin as the API shows it.
type AdminView struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	HasPassword bool      `json:"has_password"`
	Created     time.Time `json:"created"`
}

// AdminTokenView is a token without its hash; Token is set once, at creation.
type AdminTokenView struct {
	ID        string    `json:"id"`
	Admin     string    `json:"admin"`
	Name      string    `json:"name,omitempty"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	Token     string    `json:"token,omitempty"`
}

// AdminSessionView is a console session without its hash.
type AdminSessionView struct {
	ID        string    `json:"id"`
	Admin     string    `json:"admin"`
	Method    string    `json:"method"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at"`
	LastSeen  time.Time `json:"last_seen"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
}

func (s *Server) adminIdentityRoutes(mux *http.ServeMux) {
	c := s.core
	mux.HandleFunc("GET "+PathAdminMe, s.Admin(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, c.WhoAmI(r.Context()))
	}))
	mux.HandleFunc("GET "+PathAdmins, s.Admin(listing(c.ListAdmins)))
	mux.HandleFunc("POST "+PathAdmins, s.Admin(withBody(http.StatusCreated, func(r *http.Request, req AdminRequest) (any, error) {
		return c.AddAdmin(r.Context(), req.Name, req.Role, req.Password)
	})))
	mux.HandleFunc("PUT "+PathAdmins+"/{id}", s.Admin(withBody(http.StatusOK, func(r *http.Request, req AdminRequest) (any, error) {
		return c.UpdateAdmin(r.Context(), r.PathValue("id"), req.Role, req.Password)
	})))
	mux.HandleFunc("DELETE "+PathAdmins+"/{id}", s.Admin(removing(c.RemoveAdmin)))
	mux.HandleFunc("GET "+PathAdminTokens, s.Admin(listing(c.ListAdminTokens)))
	mux.HandleFunc("POST "+PathAdminTokens, s.Admin(withBody(http.StatusCreated, func(r *http.Request, req AdminTokenRequest) (any, error) {
		return c.CreateAdminToken(r.Context(), req.Admin, req.Role, req.Name, time.Duration(req.TTLSeconds)*time.Second)
	})))
	mux.HandleFunc("DELETE "+PathAdminTokens+"/{id}", s.Admin(removing(func(ctx context.Context, id string) error {
		return c.RevokeAdminCredential(ctx, adminapi.KindAdminToken, id)
	})))
	mux.HandleFunc("GET "+PathAdminSessions, s.Admin(listing(c.ListAdminSessions)))
	mux.HandleFunc("DELETE "+PathAdminSessions+"/{id}", s.Admin(removing(func(ctx context.Context, id string) error {
		return c.RevokeAdminCredential(ctx, adminapi.KindAdminSession, id)
	})))
}

// listing answers GET of a list: {"items": [...]}.
func listing[T any](list func(context.Context) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		items, err := list(r.Context())
		writeItems(w, items, err)
	}
}

// withBody answers a request whose JSON body is a T with do's result and
// status (writeAdminResult).
func withBody[T any](status int, do func(r *http.Request, req T) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req T
		if !DecodeJSON(w, r, &req) {
			return
		}
		v, err := do(r, req)
		writeAdminResult(w, status, v, err)
	}
}

// removing answers DELETE of the object {id}: 204 once remove did it.
func removing(remove func(ctx context.Context, id string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeAdminResult(w, http.StatusNoContent, nil, remove(r.Context(), r.PathValue("id")))
	}
}

func writeAdminResult(w http.ResponseWriter, status int, v any, err error) {
	switch {
	case errors.Is(err, ErrAdminInput):
		WriteError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		WriteError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, store.ErrConflict):
		WriteError(w, http.StatusConflict, "%v", err)
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	case status == http.StatusNoContent:
		w.WriteHeader(status)
	default:
		WriteJSON(w, status, v)
	}
}
