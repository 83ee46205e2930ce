package api

import (
	"errors"
	"log/slog"
	"net/http"

	"postern.dev/postern/controller/store"
)

// Server holds the routes of this package and the guards the controller's
// own routes use too.
type Server struct {
	core Core
	log  *slog.Logger
}

// New returns the API server over core; it logs to log.
func New(core Core, log *slog.Logger) *Server { return &Server{core: core, log: log} }

// Routes registers this package's endpoints on mux.
func (s *Server) Routes(mux *http.ServeMux) {
	s.statusRoutes(mux)
	s.logRoutes(mux)
	s.credentialRoutes(mux)
	s.adminIdentityRoutes(mux)
	s.objectRoutes(mux)
	s.componentRoutes(mux)
	s.clientRoutes(mux)
	s.accessRoutes(mux)
	s.mfaRoutes(mux)
	s.streamRoutes(mux)
	s.ssoRoutes(mux)
	s.webauthnRoutes(mux)
}

// Admin guards an admin API route: the caller must be an admin whose role
// allows the route (401 and WWW-Authenticate without credentials, 403
// without the right); h then finds the admin in the request context.
func (s *Server) Admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, err := s.core.AuthorizeAdmin(r)
		var fb *Forbidden
		switch {
		case err == nil:
			h(w, r.WithContext(ctx))
		case errors.As(err, &fb):
			WriteError(w, http.StatusForbidden, "%s", fb.Msg)
		case errors.Is(err, ErrAdminAuth):
			w.Header().Set("WWW-Authenticate", `Bearer realm="postern-admin"`)
			msg := "admin token required (Authorization: Bearer <DATA/admin-token> or an admin API token)"
			if err != ErrAdminAuth {
				msg = err.Error()
			}
			WriteError(w, http.StatusUnauthorized, "%s", msg)
		default:
			WriteError(w, http.StatusInternalServerError, "%v", err)
		}
	}
}

// Component guards a route of connectors or relays (mTLS): 401 without a
// certificate of an enrolled component, 403 when it is not of kind want
// ("" allows both); h gets the component's id.
func (s *Server) Component(want string, h func(w http.ResponseWriter, r *http.Request, id string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, id, err := s.core.ComponentIdentity(r)
		if err != nil {
			WriteError(w, http.StatusUnauthorized, "%v", err)
			return
		}
		if want != "" && kind != want {
			WriteError(w, http.StatusForbidden, "this endpoint is for %ss, not %ss", want, kind)
			return
		}
		h(w, r, id)
	}
}

// writeError answers a failure: about one object (*ObjectError), as
// writeObjectError does; else 500.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	var oe *ObjectError
	if errors.As(err, &oe) {
		s.writeObjectError(w, oe.Kind, oe.Key, oe.Err)
		return
	}
	WriteError(w, http.StatusInternalServerError, "%v", err)
}

// writeObjectError answers a failure about the object of kind named key.
func (s *Server) writeObjectError(w http.ResponseWriter, kind, key string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		WriteError(w, http.StatusNotFound, "%s %q not found", kind, key)
	case s.core.BadInput(err):
		WriteError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrConflict):
		WriteError(w, http.StatusConflict, "%v", err)
	default:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}
