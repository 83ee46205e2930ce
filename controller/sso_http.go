package controller

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/store"
)

// sessionMethodOIDC is the session method of single sign-on sessions.
const sessionMethodOIDC = "oidc"

// oidcSessionState is what an OIDC session keeps in Session.External. The
// refresh token is useless without the controller's client secret (the
// controller is a confidential client).
type oidcSessionState struct {
	Issuer       string    `json:"iss"`
	Subject      string    `json:"sub"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	NextRefresh  time.Time `json:"next_refresh,omitzero"`
}

func encodeOIDCState(s oidcSessionState) (json.RawMessage, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode oidc session state: %w", err)
	}
	return b, nil
}

func (c *Controller) ssoRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathOIDCConfig, c.handleOIDCConfig)
	mux.HandleFunc("POST "+controlapi.PathOIDCStart, c.ssoEndpoint(c.handleOIDCStart))
	mux.HandleFunc("POST "+controlapi.PathOIDCExchange, c.ssoEndpoint(c.handleOIDCExchange))
	mux.HandleFunc("POST "+controlapi.PathOIDCDeviceStart, c.ssoEndpoint(c.handleOIDCDeviceStart))
	mux.HandleFunc("POST "+controlapi.PathOIDCDevicePoll, c.ssoEndpoint(c.handleOIDCDevicePoll))
}

func (c *Controller) handleOIDCConfig(w http.ResponseWriter, r *http.Request) {
	if c.sso == nil {
		api.WriteJSON(w, http.StatusOK, controlapi.OIDCConfig{Enabled: false})
		return
	}
	p, err := c.sso.provider()
	if err != nil {
		// Configured but not discovered yet: say so; starting will answer 503.
		api.WriteJSON(w, http.StatusOK, controlapi.OIDCConfig{Enabled: true, Issuer: c.sso.cfg.Issuer})
		return
	}
	api.WriteJSON(w, http.StatusOK, p.PublicConfig())
}

// ssoEndpoint checks that single sign-on is configured and ready, applies
// the sign-in rate limit, and hands the provider to h.
func (c *Controller) ssoEndpoint(h func(http.ResponseWriter, *http.Request, *oidcauth.Provider)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.sso == nil {
			api.WriteError(w, http.StatusNotImplemented, "single sign-on (OIDC) is not configured on this controller")
			return
		}
		if !c.sso.limiter.Allow(api.ClientIP(r)) {
			w.Header().Set("Retry-After", "1")
			api.WriteError(w, http.StatusTooManyRequests, "too many sign-in requests from %s; slow down", api.ClientIP(r))
			return
		}
		p, err := c.sso.provider()
		if err != nil {
			w.Header().Set("Retry-After", "10")
			api.WriteError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		h(w, r, p)
	}
}

// writeOIDCError answers an oidcauth error with its status.
func (c *Controller) writeOIDCError(w http.ResponseWriter, r *http.Request, err error) {
	status := oidcauth.StatusCode(err)
	if status == http.StatusBadGateway {
		c.log.Warn("single sign-on: identity provider error", "path", r.URL.Path, "err", err)
	}
	api.WriteError(w, status, "%v", err)
}

func (c *Controller) handleOIDCStart(w http.ResponseWriter, r *http.Request, p *oidcauth.Provider) {
	var req controlapi.OIDCStartRequest
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	st, err := p.Start(req)
	if err != nil {
		c.writeOIDCError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

// checkDevice validates the device fields before a code is redeemed, so a
// malformed request does not burn the user's sign-in.
func checkDevice(d controlapi.OIDCDevice) error {
	raw, err := base64.StdEncoding.DecodeString(d.DevicePublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return errors.New("device_public_key: base64 of a 32-byte Ed25519 public key is required")
	}
	if len(d.DeviceName) > 128 || len(d.OS) > 64 {
		return errors.New("device_name or os: too long")
	}
	return nil
}

// throttled answers 429 when the client IP failed too many sign-ins.
func (c *Controller) throttled(w http.ResponseWriter, r *http.Request) bool {
	if v := c.logins.check(r.Context(), loginAttempt{IP: api.ClientIP(r)}); v.wait > 0 {
		c.met.signIn("oidc", "throttled")
		w.Header().Set("Retry-After", strconv.Itoa(int(v.wait/time.Second)+1))
		api.WriteError(w, http.StatusTooManyRequests, "%v", &throttledError{wait: v.wait})
		return true
	}
	return false
}

// signInFailed counts a refused or malformed sign-in against the client IP.
func (c *Controller) signInFailed(r *http.Request, err error) {
	if errors.Is(err, oidcauth.ErrRefused) || errors.Is(err, oidcauth.ErrBadRequest) {
		c.logins.fail(r.Context(), loginAttempt{IP: api.ClientIP(r)})
		c.log.Warn("single sign-on refused", "ip", api.ClientIP(r), "err", err)
		c.auditFailedSignIn(r.Context(), "oidc", KindUser, "", "", "", "oidc", err.Error())
	}
}

func (c *Controller) handleOIDCExchange(w http.ResponseWriter, r *http.Request, p *oidcauth.Provider) {
	var req controlapi.OIDCExchangeRequest
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	if err := checkDevice(req.OIDCDevice); err != nil {
		api.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if c.throttled(w, r) {
		return
	}
	g, err := p.Exchange(r.Context(), req.OIDCCodeGrant)
	if err != nil {
		c.signInFailed(r, err)
		c.writeOIDCError(w, r, err)
		return
	}
	resp, status, err := c.signInGrant(r.Context(), g, req.OIDCDevice)
	if err != nil {
		api.WriteError(w, status, "%v", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, resp)
}

func (c *Controller) handleOIDCDeviceStart(w http.ResponseWriter, r *http.Request, p *oidcauth.Provider) {
	// The body is empty or "{}": nothing in it is used.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		api.WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	ds, err := p.DeviceStart(r.Context())
	if err != nil {
		c.writeOIDCError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, ds)
}

func (c *Controller) handleOIDCDevicePoll(w http.ResponseWriter, r *http.Request, p *oidcauth.Provider) {
	var req controlapi.OIDCDevicePollRequest
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	if err := checkDevice(req.OIDCDevice); err != nil {
		api.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if c.throttled(w, r) {
		return
	}
	g, err := p.DevicePoll(r.Context(), req.Flow)
	switch {
	case errors.Is(err, oidcauth.ErrPending):
		api.WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCPending})
		return
	case errors.Is(err, oidcauth.ErrSlowDown):
		api.WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCSlowDown})
		return
	case err != nil:
		c.signInFailed(r, err)
		c.writeOIDCError(w, r, err)
		return
	}
	resp, status, err := c.signInGrant(r.Context(), g, req.OIDCDevice)
	if err != nil {
		api.WriteError(w, status, "%v", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCOK, Login: resp})
}

// signInGrant turns a verified grant into a Postern session: the user is
// created or updated (groups from the claim) and the refresh token kept for
// the refresher.
func (c *Controller) signInGrant(ctx context.Context, g *oidcauth.Grant, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, int, error) {
	st := oidcSessionState{Issuer: g.Identity.Issuer, Subject: g.Identity.Subject, RefreshToken: g.RefreshToken,
		NextRefresh: time.Now().Add(c.sso.cfg.RefreshInterval).UTC()}
	ext, err := encodeOIDCState(st)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	id := ExternalIdentity{Method: sessionMethodOIDC, Issuer: g.Identity.Issuer, Subject: g.Identity.Subject,
		Email: g.Identity.Email, EmailVerified: g.Identity.EmailVerified, Groups: g.Identity.Groups, External: ext}
	if g.RefreshToken == "" {
		// Nothing to re-check the user with: the session ends with the
		// provider's tokens (ask the IdP for offline_access to avoid this).
		id.ExpiresAt = g.AccessExpiry
		if id.ExpiresAt.IsZero() || (!g.Identity.IDTokenExpiry.IsZero() && g.Identity.IDTokenExpiry.After(id.ExpiresAt)) {
			id.ExpiresAt = g.Identity.IDTokenExpiry
		}
		if id.ExpiresAt.IsZero() {
			id.ExpiresAt = time.Now().Add(c.sso.cfg.RefreshInterval)
		}
	}
	return c.signInExternal(ctx, id, controlapi.LoginRequest{DevicePublicKey: dev.DevicePublicKey, DeviceName: dev.DeviceName, OS: dev.OS})
}

// oidcSessionStore is the refresher's view of the controller's sessions
// (oidcauth.SessionStore).
type oidcSessionStore struct {
	c        *Controller
	issuer   string
	interval time.Duration
}

// refreshLease is how long a session claimed for a refresh stays claimed,
// so that replicas sharing the store never refresh the same (rotating)
// refresh token twice. It is also how soon a refresh that failed because
// the identity provider was unreachable is tried again.
func refreshLease(interval time.Duration) time.Duration {
	return min(max(interval, 5*time.Second), 2*time.Minute)
}

// DueOIDCSessions claims the sessions due for a refresh. Sessions signed in
// at another issuer (the configuration changed) cannot be re-checked and are
// revoked.
func (s *oidcSessionStore) DueOIDCSessions(ctx context.Context, now time.Time) ([]oidcauth.Session, error) {
	var due []oidcauth.Session
	var foreign []string
	_, _, err := s.c.commit(ctx, func(tx store.Tx) error {
		due, foreign = nil, nil
		var sessions []Session
		if err := listInto(tx, KindSession, &sessions); err != nil {
			return err
		}
		for _, ses := range sessions {
			if ses.Method != sessionMethodOIDC || ses.Revoked || !now.Before(ses.ExpiresAt) || len(ses.External) == 0 {
				continue
			}
			var st oidcSessionState
			if err := json.Unmarshal(ses.External, &st); err != nil {
				return fmt.Errorf("decode oidc state of session %s: %w", ses.ID, err)
			}
			if st.RefreshToken == "" || st.NextRefresh.After(now) {
				continue // ends at its own expiry, or not due yet
			}
			if st.Issuer != s.issuer {
				foreign = append(foreign, ses.ID)
				continue
			}
			st.NextRefresh = now.Add(refreshLease(s.interval)).UTC()
			ext, err := encodeOIDCState(st)
			if err != nil {
				return err
			}
			if err := updateRecord(tx, KindSession, ses.ID, func(v *Session) bool { v.External = ext; return true }); err != nil {
				return err
			}
			due = append(due, oidcauth.Session{ID: ses.ID, Subject: st.Subject, RefreshToken: st.RefreshToken})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim due oidc sessions: %w", err)
	}
	for _, id := range foreign {
		if err := s.c.revokeSession(ctx, "oidc:"+s.issuer, id); err != nil {
			return nil, fmt.Errorf("revoke session %s of another identity provider: %w", id, err)
		}
		s.c.log.Warn("single sign-on: session from another identity provider revoked", "session", id)
	}
	return due, nil
}

// UpdateOIDCSession keeps the rotated refresh token and the user's current
// groups, and schedules the next check.
func (s *oidcSessionStore) UpdateOIDCSession(ctx context.Context, id string, g *oidcauth.Grant) error {
	m := s.c.model()
	ses, ok := m.SessionByID[id]
	if !ok || ses.Revoked {
		return nil // ended meanwhile (sign-out, administrator)
	}
	ext, err := encodeOIDCState(oidcSessionState{Issuer: g.Identity.Issuer, Subject: g.Identity.Subject,
		RefreshToken: g.RefreshToken, NextRefresh: time.Now().Add(s.interval).UTC()})
	if err != nil {
		return err
	}
	return s.c.UpdateExternalSession(ctx, id, g.Identity.Groups, ext)
}

// RevokeOIDCSession ends a session the identity provider no longer vouches
// for. Its device is listed in revoked_devices (connectors close its flows)
// unless another live session holds it; the device key itself is not
// blocked, so the user can sign in again once the provider lets them. The
// user's other OIDC sessions are re-checked at once.
func (s *oidcSessionStore) RevokeOIDCSession(ctx context.Context, id string, reason error) error {
	m := s.c.model()
	ses, ok := m.SessionByID[id]
	if !ok {
		return nil
	}
	if err := s.c.revokeSession(ctx, "oidc:"+s.issuer, id); err != nil {
		return err
	}
	email := ""
	if u := m.Users[ses.PrincipalID]; u != nil {
		email = u.Email
	}
	s.c.log.Warn("single sign-on: identity provider no longer vouches for the user; session revoked",
		"user", email, "session", id, "device", ses.DeviceID, "reason", reason)
	_, _, err := s.c.commit(ctx, func(tx store.Tx) error {
		var sessions []Session
		if err := listInto(tx, KindSession, &sessions); err != nil {
			return err
		}
		for _, o := range sessions {
			if o.PrincipalID != ses.PrincipalID || o.ID == id || o.Revoked || o.Method != sessionMethodOIDC || len(o.External) == 0 {
				continue
			}
			var st oidcSessionState
			if json.Unmarshal(o.External, &st) != nil || st.NextRefresh.IsZero() {
				continue
			}
			st.NextRefresh = time.Time{}
			ext, err := encodeOIDCState(st)
			if err != nil {
				return err
			}
			if err := updateRecord(tx, KindSession, o.ID, func(v *Session) bool { v.External = ext; return true }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("schedule the other sessions of %s: %w", email, err)
	}
	return nil
}
