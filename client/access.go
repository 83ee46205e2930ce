package client

import (
	"context"
	"net/http"
	"net/url"
	"runtime"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
	"postern.dev/postern/wire"
)

// Access governance on the device (docs/access.md): the daemon forwards the
// CLI's second-factor and access-request calls to the controller with its
// session; the session reports the device's posture (collectPosture).

// accessCall forwards one call to the controller with the session.
func (d *Daemon) accessCall(ctx context.Context, method, path string, in, out any) error {
	return d.sm.Call(ctx, method, path, in, out)
}

// collectPosture gathers this device's facts (posture_<os>.go).
func collectPosture(ctx context.Context) controlapi.PostureReport {
	r := probePosture(ctx)
	r.OS = runtime.GOOS
	r.ClientVersion = version.Version
	return r
}

// accessRoutes adds the access endpoints of the local API.
func (s *LocalAPIServer) accessRoutes(mux *http.ServeMux) {
	d := s.d
	forward := func(method, path string, body func() any, status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var in any
			if body != nil {
				in = body()
				if !decodeBody(w, r, in) {
					return
				}
			}
			p := path
			if id := r.PathValue("id"); id != "" {
				p += "/" + url.PathEscape(id) + "/" + r.PathValue("verb")
			}
			var out any
			if status != http.StatusNoContent {
				out = new(any)
			}
			if err := d.accessCall(r.Context(), method, p, in, out); err != nil {
				s.errorResponse(w, err)
				return
			}
			if out == nil {
				w.WriteHeader(status)
				return
			}
			writeJSON(w, status, out)
		}
	}
	mux.HandleFunc("GET "+localapi.PathMFA, forward(http.MethodGet, controlapi.PathMFA, nil, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFAEnroll, forward(http.MethodPost, controlapi.PathMFAEnroll, func() any { return new(struct{}) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFAVerify, forward(http.MethodPost, controlapi.PathMFAVerify, func() any { return new(controlapi.MFAVerifyRequest) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFARemove, forward(http.MethodPost, controlapi.PathMFA+"/remove", func() any { return new(controlapi.MFAVerifyRequest) }, http.StatusNoContent))
	s.webauthnRoutes(mux)
	mux.HandleFunc("GET "+localapi.PathRequests, forward(http.MethodGet, controlapi.PathMyRequests, nil, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathRequests, forward(http.MethodPost, controlapi.PathMyRequests, func() any { return new(controlapi.AccessRequestCreate) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathRequests+"/{id}/{verb}", forward(http.MethodPost, controlapi.PathMyRequests, func() any { return new(controlapi.AccessDecision) }, http.StatusOK))
	mux.HandleFunc("GET "+localapi.PathPosture, answer(s, d.sm.ReportPosture))
}

// isAccessStatus reports whether a connector's refusal is about access
// requirements (second factor, posture, approval or auto-lock).
func isAccessStatus(s wire.Status) bool {
	return s == wire.StatusMFARequired || s == wire.StatusPosture || s == wire.StatusApprovalRequired
}
