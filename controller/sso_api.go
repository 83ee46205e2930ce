package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

// OIDCConfig is the single sign-on setup clients may know: off, on but
// not discovered yet (starting answers 503), or the provider's public
// configuration (api.SSO).
func (c *Controller) OIDCConfig() controlapi.OIDCConfig {
	if c.sso == nil {
		return controlapi.OIDCConfig{Enabled: false}
	}
	p, err := c.sso.provider()
	if err != nil {
		return controlapi.OIDCConfig{Enabled: true, Issuer: c.sso.cfg.Issuer}
	}
	return p.PublicConfig()
}

// OIDCProvider is the identity provider for a sign-in request from ip,
// within the single sign-on rate limit (api.SSO).
func (c *Controller) OIDCProvider(ip string) (api.OIDCProvider, error) {
	if c.sso == nil {
		return nil, api.ErrSSOOff
	}
	if !c.sso.limiter.Allow(ip) {
		return nil, api.ErrSSORate
	}
	p, err := c.sso.provider()
	if err != nil {
		return nil, err
	}
	return p, nil
}

// SSOThrottle refuses a sign-in from an IP that failed too many (api.SSO).
func (c *Controller) SSOThrottle(ctx context.Context, ip string) error {
	if v := c.logins.check(ctx, loginAttempt{IP: ip}); v.wait > 0 {
		c.met.signIn("oidc", "throttled")
		return &throttledError{wait: v.wait}
	}
	return nil
}

// SSOSignInFailed counts a refused or malformed sign-in against the client
// IP (api.SSO).
func (c *Controller) SSOSignInFailed(ctx context.Context, ip string, err error) {
	if errors.Is(err, oidcauth.ErrRefused) || errors.Is(err, oidcauth.ErrBadRequest) {
		c.logins.fail(ctx, loginAttempt{IP: ip})
		c.log.Warn("single sign-on refused", "ip", ip, "err", err)
		c.auditFailedSignIn(ctx, "oidc", KindUser, "", "", "", "oidc", err.Error())
	}
}

// SignInGrant turns a verified grant into a Postern session: the user is
// created or updated (groups from the claim) and the refresh token kept for
// the refresher (api.SSO).
func (c *Controller) SignInGrant(ctx context.Context, g *oidcauth.Grant, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, int, error) {
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
