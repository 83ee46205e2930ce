package controller

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// Console cookies. __Host- cookies are Secure, host-only and Path=/, so no
// other site or subdomain can set them; SameSite=Strict keeps them off
// cross-site requests, and every form also carries a CSRF token.
const (
	consoleCookie    = "__Host-postern-console"
	consoleCSRFField = "csrf"
	// consolePreCookie carries the sign-in form's CSRF token before there is
	// a session (double submit).
	consolePreCookie = "__Host-postern-signin"
)

// csrfFor derives a session's CSRF token from its secret: only the holder of
// the cookie can compute it, and nothing more needs storing.
func csrfFor(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("postern console csrf"))
	return hex.EncodeToString(m.Sum(nil))
}

func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// consoleSession is a signed-in console request.
type consoleSession struct {
	p    *adminPrincipal
	csrf string
}

// sessionFromRequest resolves the console cookie to a live session and its
// admin's current role.
func (c *Controller) sessionFromRequest(r *http.Request) (*consoleSession, error) {
	ck, err := r.Cookie(consoleCookie)
	if err != nil || ck.Value == "" {
		return nil, errAdminAuth
	}
	var s *AdminSession
	var adm *Admin
	err = c.store.View(r.Context(), func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdminSession, sha256Hex(ck.Value))
		if err != nil {
			return err
		}
		if s, err = decodeObj[AdminSession](o); err != nil {
			return err
		}
		ao, err := tx.Get(KindAdmin, s.AdminID)
		if err != nil {
			return err
		}
		adm, err = decodeObj[Admin](ao)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errAdminAuth
	}
	if err != nil {
		return nil, err
	}
	now := c.now()
	if !sessionLive(s, now) {
		return nil, errAdminAuth
	}
	if now.Sub(s.LastSeen) >= adminTouchEvery {
		c.touchAdminRecord(r.Context(), KindAdminSession, s.ID, now)
	}
	via := "session " + s.ID
	if s.Method == "oidc" {
		via = fmt.Sprintf("oidc %s (session %s)", s.Subject, s.ID)
	}
	p := &adminPrincipal{Name: adm.Name, AdminID: adm.ID, Role: adm.Role, Via: via, Agent: truncate(r.UserAgent(), 200),
		caps: roleCaps[adm.Role], SessionID: s.ID}
	return &consoleSession{p: p, csrf: csrfFor(ck.Value)}, nil
}

// sameOrigin refuses state-changing requests another site started: the
// browser's Sec-Fetch-Site or, failing that, Origin must be this controller.
func (c *Controller) sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not a browser, or an old one: the CSRF token still guards
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// checkCSRF compares the form's token in constant time.
func checkCSRF(r *http.Request, want string) bool {
	got := r.PostFormValue(consoleCSRFField)
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// consoleSignIn checks an admin's password and starts a console session;
// it returns the cookie secret.
func (c *Controller) consoleSignIn(ctx context.Context, r *http.Request, name, password string) (string, error) {
	name = strings.TrimSpace(name)
	at := loginAttempt{Account: "admin:" + name, IP: api.ClientIP(r)}
	if v := c.logins.check(ctx, at); v.wait > 0 {
		return "", fmt.Errorf("%w: try again in %s", ErrThrottled, v.wait.Round(1e9))
	}
	var adm *Admin
	err := c.store.View(ctx, func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdmin, name)
		if err != nil {
			return err
		}
		adm, err = decodeObj[Admin](o)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	hash := dummyHash()
	if adm != nil && adm.PasswordHash != "" {
		hash = adm.PasswordHash
	}
	if !verifyPassword(hash, password) || adm == nil || adm.PasswordHash == "" {
		c.logins.fail(ctx, at)
		p := &adminPrincipal{Name: name, Via: "password", Agent: truncate(r.UserAgent(), 200)}
		c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
			return tx.Audit(store.AuditEntry{Actor: name, Action: "sign-in-failed", Kind: KindAdmin, Name: name})
		})
		return "", fmt.Errorf("%w: wrong name or password", ErrUnauthenticated)
	}
	c.logins.success(ctx, at)
	return c.startConsoleSession(ctx, r, adm, "password", "")
}

// startConsoleSession stores a new session for adm and returns its secret.
func (c *Controller) startConsoleSession(ctx context.Context, r *http.Request, adm *Admin, method, subject string) (string, error) {
	secret := randomHex(32)
	now := c.now().UTC()
	s := AdminSession{ID: newID("ases"), AdminID: adm.ID, Method: method, Subject: subject, TokenHash: sha256Hex(secret),
		Created: now, ExpiresAt: now.Add(adminSessionTTL), LastSeen: now, IP: api.ClientIP(r), UserAgent: truncate(r.UserAgent(), 200)}
	p := &adminPrincipal{Name: adm.Name, AdminID: adm.ID, Role: adm.Role, Via: method + " (session " + s.ID + ")", Agent: s.UserAgent}
	_, _, err := c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
		o, err := toObject(KindAdminSession, s.ID, s.TokenHash, &s)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: adm.Name, Action: "sign-in", Kind: KindAdminSession, ObjectID: s.ID, Name: adm.Name})
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// endConsoleSession deletes the session behind the request's cookie.
func (c *Controller) endConsoleSession(ctx context.Context, cs *consoleSession) error {
	return c.RevokeAdminCredential(withAdmin(ctx, cs.p), KindAdminSession, cs.p.SessionID)
}
