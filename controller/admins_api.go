package controller

import (
	"errors"
	"net/http"
	"time"

	"postern.dev/postern/controller/api"
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

func (c *Controller) adminIdentityRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathAdminMe, c.admin(func(w http.ResponseWriter, r *http.Request) {
		p := adminFrom(r.Context())
		api.WriteJSON(w, http.StatusOK, MeView{Name: p.Name, Role: p.Role, Via: p.Via})
	}))
	mux.HandleFunc("GET "+PathAdmins, c.admin(func(w http.ResponseWriter, r *http.Request) {
		as, err := c.ListAdmins(r.Context())
		writeItems(w, as, err)
	}))
	mux.HandleFunc("POST "+PathAdmins, c.admin(func(w http.ResponseWriter, r *http.Request) {
		var req AdminRequest
		if !api.DecodeJSON(w, r, &req) {
			return
		}
		a, err := c.AddAdmin(r.Context(), req.Name, req.Role, req.Password)
		writeAdminResult(w, http.StatusCreated, a, err)
	}))
	mux.HandleFunc("PUT "+PathAdmins+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) {
		var req AdminRequest
		if !api.DecodeJSON(w, r, &req) {
			return
		}
		a, err := c.UpdateAdmin(r.Context(), r.PathValue("id"), req.Role, req.Password)
		writeAdminResult(w, http.StatusOK, a, err)
	}))
	mux.HandleFunc("DELETE "+PathAdmins+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) {
		writeAdminResult(w, http.StatusNoContent, nil, c.RemoveAdmin(r.Context(), r.PathValue("id")))
	}))
	mux.HandleFunc("GET "+PathAdminTokens, c.admin(func(w http.ResponseWriter, r *http.Request) {
		ts, err := c.ListAdminTokens(r.Context())
		writeItems(w, ts, err)
	}))
	mux.HandleFunc("POST "+PathAdminTokens, c.admin(func(w http.ResponseWriter, r *http.Request) {
		var req AdminTokenRequest
		if !api.DecodeJSON(w, r, &req) {
			return
		}
		t, err := c.CreateAdminToken(r.Context(), req.Admin, req.Role, req.Name, time.Duration(req.TTLSeconds)*time.Second)
		writeAdminResult(w, http.StatusCreated, t, err)
	}))
	mux.HandleFunc("DELETE "+PathAdminTokens+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) {
		writeAdminResult(w, http.StatusNoContent, nil, c.RevokeAdminCredential(r.Context(), KindAdminToken, r.PathValue("id")))
	}))
	mux.HandleFunc("GET "+PathAdminSessions, c.admin(func(w http.ResponseWriter, r *http.Request) {
		ss, err := c.ListAdminSessions(r.Context())
		writeItems(w, ss, err)
	}))
	mux.HandleFunc("DELETE "+PathAdminSessions+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) {
		writeAdminResult(w, http.StatusNoContent, nil, c.RevokeAdminCredential(r.Context(), KindAdminSession, r.PathValue("id")))
	}))
}

func writeItems[T any](w http.ResponseWriter, items []T, err error) {
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if items == nil {
		items = []T{}
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

func writeAdminResult(w http.ResponseWriter, status int, v any, err error) {
	switch {
	case errors.Is(err, errAdminInput):
		api.WriteError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		api.WriteError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, store.ErrConflict):
		api.WriteError(w, http.StatusConflict, "%v", err)
	case err != nil:
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
	case status == http.StatusNoContent:
		w.WriteHeader(status)
	default:
		api.WriteJSON(w, status, v)
	}
}
