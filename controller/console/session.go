package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/api"
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
	p    *Admin
	csrf string
}

// sessionFromRequest resolves the console cookie to a live session and its
// admin's current role, and returns the context to serve the request with.
func (c *Server) sessionFromRequest(r *http.Request) (context.Context, *consoleSession, error) {
	ck, err := r.Cookie(consoleCookie)
	if err != nil || ck.Value == "" {
		return nil, nil, api.ErrAdminAuth
	}
	ctx, p, err := c.core.ConsoleSession(r, ck.Value)
	if err != nil {
		return nil, nil, fmt.Errorf("console session: %w", err)
	}
	return ctx, &consoleSession{p: p, csrf: csrfFor(ck.Value)}, nil
}

// sameOrigin refuses state-changing requests another site started: the
// browser's Sec-Fetch-Site or, failing that, Origin must be this controller.
func (c *Server) sameOrigin(r *http.Request) bool {
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

// endConsoleSession deletes the session behind the request's cookie; ctx
// carries its admin.
func (c *Server) endConsoleSession(ctx context.Context, cs *consoleSession) error {
	return c.core.RevokeAdminCredential(ctx, adminapi.KindAdminSession, cs.p.SessionID)
}
