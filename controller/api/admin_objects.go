// Admin API for the objects of the model: list, get, create, update and
// delete under /api/v1/<kind path>, and the whole configuration (POST
// /api/v1/apply, GET /api/v1/spec).

package api

import (
	"context"
	"io"
	"net/http"

	"postern.dev/postern/controller/adminapi"
)

// Objects reads and changes the model's objects for the admin API. Views
// are the objects as the API shows them (JSON-encodable, without secrets).
// Errors about one object are *ObjectError; others answer 500.
type Objects interface {
	// ListObjects is one page of objects of kind after cursor (an id) and
	// the cursor of the next page ("" at the end).
	ListObjects(ctx context.Context, kind, cursor string, limit int) (items []any, next string, err error)
	// GetObject is the object of kind with id or name key.
	GetObject(ctx context.Context, kind, key string) (any, error)
	// DeleteObject removes it: a device or session is revoked, a relay
	// deleted, any other object removed from the declared configuration.
	DeleteObject(ctx context.Context, kind, key string) error
	// UpsertObject creates (update false) or replaces the object of kind
	// with id or name key from its JSON body and returns its view.
	UpsertObject(ctx context.Context, kind, key string, update bool, body []byte) (any, error)
	// Apply reconciles the model with a configuration file (YAML), or only
	// plans it, and returns the plan.
	Apply(ctx context.Context, file []byte, dryRun bool) (any, error)
	// CurrentSpec is the declared configuration the model holds now.
	CurrentSpec(ctx context.Context) (any, error)
}

// ListResponse is one page of a list.
type ListResponse struct {
	Items      []any  `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// objectRoutes are the object paths under /api/v1 and the store kinds they
// hold; spec kinds are declared (network.yaml) and may also be created and
// replaced one by one.
var objectRoutes = []struct {
	path, kind string
	spec       bool
}{
	{"networks", adminapi.KindNetwork, true},
	{"connectors", adminapi.KindConnector, true},
	{"relays", adminapi.KindRelay, false},
	{"resources", adminapi.KindResource, true},
	{"groups", adminapi.KindGroup, true},
	{"users", adminapi.KindUser, true},
	{"service-accounts", adminapi.KindServiceAccount, true},
	{"devices", adminapi.KindDevice, false},
	{"sessions", adminapi.KindSession, false},
	{"posture-profiles", adminapi.KindPostureProfile, true},
}

func (s *Server) objectRoutes(mux *http.ServeMux) {
	for _, o := range objectRoutes {
		kind := o.kind
		base := "/api/v1/" + o.path
		mux.HandleFunc("GET "+base, s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleList(w, r, kind) }))
		mux.HandleFunc("GET "+base+"/{id}", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleGet(w, r, kind) }))
		mux.HandleFunc("DELETE "+base+"/{id}", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleDelete(w, r, kind) }))
		if o.spec {
			mux.HandleFunc("POST "+base, s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleUpsert(w, r, kind, false) }))
			mux.HandleFunc("PUT "+base+"/{id}", s.Admin(func(w http.ResponseWriter, r *http.Request) { s.handleUpsert(w, r, kind, true) }))
		}
	}
	mux.HandleFunc("POST /api/v1/apply", s.Admin(s.handleApply))
	mux.HandleFunc("GET /api/v1/spec", s.Admin(s.handleSpec))
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, kind string) {
	limit, cursor, ok := PageParams(w, r)
	if !ok {
		return
	}
	items, next, err := s.core.ListObjects(r.Context(), kind, cursor, limit)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if items == nil {
		items = []any{}
	}
	WriteJSON(w, http.StatusOK, ListResponse{Items: items, NextCursor: next})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, kind string) {
	v, err := s.core.GetObject(r.Context(), kind, r.PathValue("id"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, kind string) {
	if err := s.core.DeleteObject(r.Context(), kind, r.PathValue("id")); err != nil {
		s.writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleUpsert(w http.ResponseWriter, r *http.Request, kind string, update bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	v, err := s.core.UpsertObject(r.Context(), kind, r.PathValue("id"), update, body)
	if err != nil {
		s.writeError(w, err)
		return
	}
	status := http.StatusCreated
	if update {
		status = http.StatusOK
	}
	WriteJSON(w, status, v)
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	dry := r.URL.Query().Get("dry_run")
	plan, err := s.core.Apply(r.Context(), body, dry == "1" || dry == "true")
	if err != nil {
		s.writeObjectError(w, "configuration", "", err)
		return
	}
	WriteJSON(w, http.StatusOK, plan)
}

func (s *Server) handleSpec(w http.ResponseWriter, r *http.Request) {
	spec, err := s.core.CurrentSpec(r.Context())
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, spec)
}
