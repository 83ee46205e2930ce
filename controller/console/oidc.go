package console

import (
	"errors"
	"net/http"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/oidcauth"
)

// Console single sign-on: admins are identity-provider users in one of the
// groups the controller's oidc admin_groups map to a role. The controller
// is the OIDC client (authorization code with PKCE, its confidential client
// secret); the sealed flow and the PKCE verifier wait in short-lived
// cookies.
const (
	// OIDCCallbackPath is where the identity provider sends the admin back
	// (PUBLIC_URL + OIDCCallbackPath must be one of its redirect URIs).
	OIDCCallbackPath    = "/console/oidc/callback"
	consoleOIDCFlow     = "__Host-postern-oidc-flow"
	consoleOIDCVerifier = "__Host-postern-oidc-pkce"
)

func setLaxCookie(w http.ResponseWriter, name, value string, maxAge int) {
	// Lax: the identity provider's redirect back is a cross-site navigation.
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func (c *Server) handleConsoleOIDCStart(w http.ResponseWriter, r *http.Request) {
	if !c.core.ConsoleSSO() {
		c.loginForm(w, http.StatusNotFound, "", "Single sign-on for admins is not configured (oidc admin_groups).")
		return
	}
	p, err := c.core.OIDCProvider(api.ClientIP(r))
	if errors.Is(err, api.ErrSSORate) {
		c.loginForm(w, http.StatusTooManyRequests, "", "Too many sign-in requests from your address; wait a moment.")
		return
	}
	if err != nil {
		c.loginForm(w, http.StatusServiceUnavailable, "", "The identity provider is not reachable: "+err.Error())
		return
	}
	verifier := api.RandomHex(32)
	start, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: c.publicURL + OIDCCallbackPath,
		CodeChallenge: oidcauth.S256(verifier), CodeChallengeMethod: "S256"})
	if err != nil {
		c.log.Error("console single sign-on start", "err", err)
		c.loginForm(w, http.StatusInternalServerError, "", "Single sign-on could not start: "+err.Error())
		return
	}
	setLaxCookie(w, consoleOIDCFlow, start.Flow, 600)
	setLaxCookie(w, consoleOIDCVerifier, verifier, 600)
	consoleHeaders(w)
	http.Redirect(w, r, start.AuthURL, http.StatusSeeOther)
}

func (c *Server) handleConsoleOIDCCallback(w http.ResponseWriter, r *http.Request) {
	flow, err1 := r.Cookie(consoleOIDCFlow)
	verifier, err2 := r.Cookie(consoleOIDCVerifier)
	setLaxCookie(w, consoleOIDCFlow, "", -1)
	setLaxCookie(w, consoleOIDCVerifier, "", -1)
	if !c.core.ConsoleSSO() {
		c.loginForm(w, http.StatusNotFound, "", "Single sign-on for admins is not configured.")
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		c.loginForm(w, http.StatusUnauthorized, "", "The identity provider refused the sign-in: "+e+" "+q.Get("error_description"))
		return
	}
	if err1 != nil || err2 != nil {
		c.loginForm(w, http.StatusBadRequest, "", "The single sign-on flow expired or was started in another browser: try again.")
		return
	}
	p, err := c.core.ConsoleOIDCProvider()
	if err != nil {
		c.loginForm(w, http.StatusServiceUnavailable, "", "The identity provider is not reachable: "+err.Error())
		return
	}
	g, err := p.Exchange(r.Context(), controlapi.OIDCCodeGrant{Flow: flow.Value, State: q.Get("state"), Code: q.Get("code"),
		CodeVerifier: verifier.Value, RedirectURI: c.publicURL + OIDCCallbackPath})
	if err != nil {
		c.log.Warn("console single sign-on refused", "err", err)
		c.loginForm(w, http.StatusUnauthorized, "", "Single sign-on failed: "+err.Error())
		return
	}
	secret, err := c.core.ConsoleSSOSignIn(r.Context(), r, &g.Identity)
	if err != nil {
		status, msg := http.StatusInternalServerError, "Sign-in failed on the server; see its log."
		if errors.Is(err, api.ErrNotAllowed) {
			status, msg = http.StatusForbidden, err.Error()
		} else {
			c.log.Error("console single sign-on", "err", err)
		}
		c.loginForm(w, status, "", msg)
		return
	}
	setCookie(w, consoleCookie, secret, int(c.ttl.Seconds()))
	// A redirect would still belong to the provider's cross-site navigation,
	// which carries no SameSite=Strict cookie: continue from this page.
	consoleHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write([]byte(continuePage))
}

// continuePage moves on to the console as a same-site navigation (a meta
// refresh needs no script, so the CSP stays strict).
const continuePage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/console/">
<title>Signed in · Postern</title><link rel="stylesheet" href="/console/static/console.css"></head>
<body><main><p>Signed in. <a href="/console/">Continue to the console</a>.</p></main></body></html>
`
