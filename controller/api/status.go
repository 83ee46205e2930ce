// Health, readiness, metrics and the Connection Token keys: GET /healthz,
// /readyz, /metrics (admin), /.well-known/jwks.json and
// POST /api/v1/token-keys/rotate (admin).

package api

import (
	"context"
	"encoding/json"
	"net/http"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/version"
)

// PathReady is the readiness probe: 200 once the model is loaded and the
// store answers, 503 otherwise.
const PathReady = "/readyz"

// PathMetrics serves the Prometheus metrics (admin token on the API
// listener; no authentication on the --metrics listener).
const PathMetrics = "/metrics"

// Status is the controller's health, keys and metrics.
type Status interface {
	// Revision is the model's revision (0 before it is loaded).
	Revision() int64
	// Ready reports whether the controller can serve (model loaded, store
	// answering), and why not.
	Ready(ctx context.Context) (ok bool, why string)
	// JWKS is the Connection Token verification key set.
	JWKS() json.RawMessage
	// RotateTokenKey makes a new Connection Token signing key current and
	// pushes the new key set to the components.
	RotateTokenKey() error
	// PrometheusHandler serves the controller's metrics.
	PrometheusHandler() http.Handler
}

func (s *Server) statusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathHealth, s.HandleHealth)
	mux.HandleFunc("GET "+PathReady, s.HandleReady)
	mux.Handle("GET "+PathMetrics, s.Admin(s.core.PrometheusHandler().ServeHTTP))
	mux.HandleFunc("GET "+controlapi.PathJWKS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(s.core.JWKS())
	})
	mux.HandleFunc("POST /api/v1/token-keys/rotate", s.Admin(func(w http.ResponseWriter, r *http.Request) {
		if err := s.core.RotateTokenKey(); err != nil {
			WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.core.JWKS())
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
}

// HandleHealth is GET /healthz: the version and the model's revision.
func (s *Server) HandleHealth(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": version.Version, "revision": s.core.Revision()})
}

// HandleReady is GET /readyz.
func (s *Server) HandleReady(w http.ResponseWriter, r *http.Request) {
	ok, why := s.core.Ready(r.Context())
	if !ok {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reason": why})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "revision": s.core.Revision()})
}
