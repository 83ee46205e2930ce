package client

import (
	"net/http"
	"net/url"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// webauthnRoutes forwards the WebAuthn ceremony endpoints of the local API
// to the controller with the daemon's session; the browser talks to the
// controller directly with the ceremony's one-time URL.
func (s *LocalAPIServer) webauthnRoutes(mux *http.ServeMux) {
	d := s.d
	mux.HandleFunc("POST "+localapi.PathMFAWebAuthn, func(w http.ResponseWriter, r *http.Request) {
		var in controlapi.WebAuthnBegin
		if !decodeBody(w, r, &in) {
			return
		}
		var out controlapi.WebAuthnCeremony
		if err := d.accessCall(r.Context(), http.MethodPost, controlapi.PathMFAWebAuthn, in, &out); err != nil {
			s.errorResponse(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET "+localapi.PathMFAWebAuthn+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		var out controlapi.WebAuthnCeremony
		if err := d.accessCall(r.Context(), http.MethodGet, controlapi.PathMFAWebAuthn+"/"+url.PathEscape(r.PathValue("id")), nil, &out); err != nil {
			s.errorResponse(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST "+localapi.PathMFAWebAuthn+"/remove", func(w http.ResponseWriter, r *http.Request) {
		var in struct{}
		if !decodeBody(w, r, &in) {
			return
		}
		if err := d.accessCall(r.Context(), http.MethodPost, controlapi.PathMFAWebAuthn+"/remove", in, nil); err != nil {
			s.errorResponse(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
