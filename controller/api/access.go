// Just-in-time access requests: a device's own (controlapi.PathMyRequests,
// session token) and every request for admins
// (controlapi.PathAccessRequests): list, create, approve or deny.

package api

import (
	"context"
	"errors"
	"net/http"

	"postern.dev/postern/controlapi"
)

// AccessRequests lists and decides access requests for admins; a device's
// own go through its ClientSession.
type AccessRequests interface {
	// AllAccessRequests lists every request, newest first.
	AllAccessRequests() []controlapi.AccessRequest
	// DecideAccessRequest approves or denies request id (verb "approve" or
	// "deny") as the admin in ctx.
	DecideAccessRequest(ctx context.Context, id, verb string, dec controlapi.AccessDecision) (controlapi.AccessRequest, error)
}

// Errors of access requests, with their statuses.
var (
	ErrRequest       = errors.New("invalid access request")                    // 400
	ErrNotApprover   = errors.New("not an approver of this resource")          // 403
	ErrSelfApproval  = errors.New("approvers never decide their own requests") // 403
	ErrRequestState  = errors.New("request already decided")                   // 409
	ErrNoSuchRequest = errors.New("no such access request")                    // 404
)

func (s *Server) accessRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathMyRequests, s.handleMyRequests)
	mux.HandleFunc("POST "+controlapi.PathMyRequests, s.handleCreateRequest)
	mux.HandleFunc("POST "+controlapi.PathMyRequests+"/{id}/{verb}", s.handleClientDecision)
	mux.HandleFunc("GET "+controlapi.PathAccessRequests, s.Admin(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, s.core.AllAccessRequests())
	}))
	mux.HandleFunc("POST "+controlapi.PathAccessRequests+"/{id}/{verb}", s.Admin(s.handleAdminDecision))
}

func writeAccessError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrRequest):
		WriteError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, ErrNoSuchRequest):
		WriteError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrNotApprover), errors.Is(err, ErrSelfApproval):
		WriteError(w, http.StatusForbidden, "%v", err)
	case errors.Is(err, ErrRequestState):
		WriteError(w, http.StatusConflict, "%v", err)
	default:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}

func (s *Server) handleMyRequests(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	WriteJSON(w, http.StatusOK, cs.AccessRequests())
}

func (s *Server) handleCreateRequest(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	var req controlapi.AccessRequestCreate
	if !DecodeJSON(w, r, &req) {
		return
	}
	v, err := cs.RequestAccess(r.Context(), req)
	if err != nil {
		writeAccessError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, v)
}

func (s *Server) handleClientDecision(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	var dec controlapi.AccessDecision
	if !DecodeJSON(w, r, &dec) {
		return
	}
	v, err := cs.DecideAccessRequest(r.Context(), r.PathValue("id"), r.PathValue("verb"), dec)
	if err != nil {
		writeAccessError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

func (s *Server) handleAdminDecision(w http.ResponseWriter, r *http.Request) {
	var dec controlapi.AccessDecision
	if !DecodeJSON(w, r, &dec) {
		return
	}
	v, err := s.core.DecideAccessRequest(r.Context(), r.PathValue("id"), r.PathValue("verb"), dec)
	if err != nil {
		writeAccessError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, v)
}
