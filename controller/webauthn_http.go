package controller

import (
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// HTTP side of the WebAuthn second factor (webauthn.go): the client's
// begin, poll and remove endpoints, the browser's options and finish
// endpoints, and the static page that runs navigator.credentials (no inline
// script, so it works under a strict Content-Security-Policy).

//go:embed webauthn_page
var webauthnFiles embed.FS

func (c *Controller) webauthnRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+controlapi.PathMFAWebAuthn, c.handleWebAuthnBegin)
	mux.HandleFunc("GET "+controlapi.PathMFAWebAuthn+"/{id}", c.handleWebAuthnStatus)
	mux.HandleFunc("POST "+controlapi.PathMFAWebAuthn+"/remove", c.handleWebAuthnRemove)
	mux.HandleFunc("POST "+controlapi.PathWebAuthnOptions, c.handleWebAuthnOptions)
	mux.HandleFunc("POST "+controlapi.PathWebAuthnFinish, c.handleWebAuthnFinish)
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

func (c *Controller) ceremonyView(cer *webauthnCeremony) controlapi.WebAuthnCeremony {
	v := controlapi.WebAuthnCeremony{ID: cer.ID, Kind: cer.Kind, State: cer.State, Expires: cer.Expires, Error: cer.Error}
	if v.State == controlapi.WebAuthnPending && !c.now().Before(cer.Expires) {
		v.State, v.Error = controlapi.WebAuthnFailed, "expired: the browser did not finish in time"
	}
	return v
}

func (c *Controller) handleWebAuthnBegin(w http.ResponseWriter, r *http.Request) {
	s, m, u, ok := c.userSession(w, r)
	if !ok {
		return
	}
	var req controlapi.WebAuthnBegin
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	cer, secret, status, err := c.beginWebAuthn(r, s, m, u, req.Register)
	if err != nil {
		api.WriteError(w, status, "%v", err)
		return
	}
	v := c.ceremonyView(cer)
	v.URL = c.issuer + controlapi.PathWebAuthnPage + "#" + secret
	api.WriteJSON(w, http.StatusOK, v)
}

// handleWebAuthnStatus answers a ceremony of the caller's session.
func (c *Controller) handleWebAuthnStatus(w http.ResponseWriter, r *http.Request) {
	s, _, u, ok := c.userSession(w, r)
	if !ok {
		return
	}
	var cer webauthnCeremony
	err := c.store.View(r.Context(), func(tx store.Tx) error {
		o, err := tx.Get(KindWebAuthnCeremony, r.PathValue("id"))
		if err != nil {
			return err
		}
		return json.Unmarshal(o.Data, &cer)
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && cer.SessionID != s.ID) {
		api.WriteError(w, http.StatusNotFound, "no WebAuthn ceremony %q of this session", r.PathValue("id"))
		return
	}
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "load WebAuthn ceremony: %v", err)
		return
	}
	v := c.ceremonyView(&cer)
	if v.State == controlapi.WebAuthnDone {
		m := c.model()
		if ns := m.SessionByID[s.ID]; ns != nil {
			s = ns
		}
		st := c.mfaStatus(m, s, u.ID)
		v.MFA = &st
	}
	api.WriteJSON(w, http.StatusOK, v)
}

// handleWebAuthnRemove removes all of the user's security keys; it needs a
// step-up within mfaRemoveWindow.
func (c *Controller) handleWebAuthnRemove(w http.ResponseWriter, r *http.Request) {
	s, m, u, ok := c.userSession(w, r)
	if !ok {
		return
	}
	var req struct{}
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	keys := m.access.webauthn[u.ID]
	if len(keys) == 0 {
		api.WriteError(w, http.StatusNotFound, "%v", ErrWebAuthnNoKey)
		return
	}
	if !c.recentStepUp(s) {
		api.WriteError(w, http.StatusForbidden, "removing security keys needs a step-up within %s: run postern mfa --webauthn (or postern mfa) first", mfaRemoveWindow)
		return
	}
	_, _, err := c.commit(r.Context(), func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.Delete(KindWebAuthn, k.ID); err != nil {
				return err
			}
			if err := tx.Audit(store.AuditEntry{Actor: u.Email, Action: "mfa-remove", Kind: KindWebAuthn, ObjectID: k.ID, Name: u.Email, Device: s.DeviceID}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "remove security keys: %v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Controller) handleWebAuthnOptions(w http.ResponseWriter, r *http.Request) {
	var req controlapi.WebAuthnSecret
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	cer, status, err := c.pendingCeremony(r, req.Secret)
	if err != nil {
		api.WriteError(w, status, "%v", err)
		return
	}
	u, ok := c.model().Users[cer.UserID]
	if !ok {
		api.WriteError(w, http.StatusUnauthorized, "%v: the account no longer exists", ErrUnauthenticated)
		return
	}
	api.WriteJSON(w, http.StatusOK, controlapi.WebAuthnOptions{Kind: cer.Kind, User: u.Email, PublicKey: cer.Options})
}

func (c *Controller) handleWebAuthnFinish(w http.ResponseWriter, r *http.Request) {
	var req controlapi.WebAuthnFinish
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	cer, status, err := c.finishWebAuthn(r, req)
	if err != nil {
		if status == http.StatusInternalServerError {
			c.log.Error("WebAuthn finish", "err", err)
		}
		api.WriteError(w, status, "%v", err)
		return
	}
	c.log.Info("WebAuthn ceremony done", "kind", cer.Kind, "user", cer.UserID, "device", cer.DeviceID)
	api.WriteJSON(w, http.StatusOK, c.ceremonyView(cer))
}
