package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/store"
)

// Console single sign-on: admins are identity-provider users in one of the
// groups OIDCConfig.AdminGroups maps to a role. The controller is the OIDC
// client (authorization code with PKCE, its confidential client secret);
// the sealed flow and the PKCE verifier wait in short-lived cookies.
const (
	consoleOIDCCallback = "/console/oidc/callback"
	consoleOIDCFlow     = "__Host-postern-oidc-flow"
	consoleOIDCVerifier = "__Host-postern-oidc-pkce"
)

// ssoRedirects is the redirect URIs the provider accepts: the configured
// ones (or the loopback defaults) and, with admin groups, the console's.
func (c *Controller) ssoRedirects(oc OIDCConfig) []string {
	r := slices.Clone(oc.RedirectURLs)
	if len(oc.AdminGroups) == 0 {
		return r
	}
	if len(r) == 0 {
		r = []string{"http://127.0.0.1/callback", "http://[::1]/callback"}
	}
	return append(r, c.issuer+consoleOIDCCallback)
}

// consoleSSO reports whether admins may sign in with single sign-on.
func (c *Controller) consoleSSO() bool {
	return c.sso != nil && len(c.sso.cfg.AdminGroups) > 0
}

// adminRoleOf is the most powerful role the groups map to ("" none).
func adminRoleOf(groups []string, mapping map[string]string) string {
	best := ""
	for _, g := range groups {
		role, ok := mapping[g]
		if !ok {
			continue
		}
		if best == "" || slices.Index(Roles, role) < slices.Index(Roles, best) {
			best = role
		}
	}
	return best
}

func setLaxCookie(w http.ResponseWriter, name, value string, maxAge int) {
	// Lax: the identity provider's redirect back is a cross-site navigation.
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func (c *Controller) handleConsoleOIDCStart(w http.ResponseWriter, r *http.Request) {
	if !c.consoleSSO() {
		c.loginForm(w, http.StatusNotFound, "", "Single sign-on for admins is not configured (oidc admin_groups).")
		return
	}
	if !c.sso.limiter.Allow(api.ClientIP(r)) {
		c.loginForm(w, http.StatusTooManyRequests, "", "Too many sign-in requests from your address; wait a moment.")
		return
	}
	p, err := c.sso.provider()
	if err != nil {
		c.loginForm(w, http.StatusServiceUnavailable, "", "The identity provider is not reachable: "+err.Error())
		return
	}
	verifier := randomHex(32)
	start, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: c.issuer + consoleOIDCCallback,
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

func (c *Controller) handleConsoleOIDCCallback(w http.ResponseWriter, r *http.Request) {
	flow, err1 := r.Cookie(consoleOIDCFlow)
	verifier, err2 := r.Cookie(consoleOIDCVerifier)
	setLaxCookie(w, consoleOIDCFlow, "", -1)
	setLaxCookie(w, consoleOIDCVerifier, "", -1)
	if !c.consoleSSO() {
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
	p, err := c.sso.provider()
	if err != nil {
		c.loginForm(w, http.StatusServiceUnavailable, "", "The identity provider is not reachable: "+err.Error())
		return
	}
	g, err := p.Exchange(r.Context(), controlapi.OIDCCodeGrant{Flow: flow.Value, State: q.Get("state"), Code: q.Get("code"),
		CodeVerifier: verifier.Value, RedirectURI: c.issuer + consoleOIDCCallback})
	if err != nil {
		c.log.Warn("console single sign-on refused", "err", err)
		c.loginForm(w, http.StatusUnauthorized, "", "Single sign-on failed: "+err.Error())
		return
	}
	secret, err := c.consoleSSOSession(r.Context(), r, &g.Identity)
	if err != nil {
		status, msg := http.StatusInternalServerError, "Sign-in failed on the server; see its log."
		if errors.Is(err, ErrNotAllowed) {
			status, msg = http.StatusForbidden, err.Error()
		} else {
			c.log.Error("console single sign-on", "err", err)
		}
		c.loginForm(w, status, "", msg)
		return
	}
	setCookie(w, consoleCookie, secret, int(adminSessionTTL.Seconds()))
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

// consoleSSOSession maps a verified identity to an admin (created on first
// sign-in; the role follows the groups at every sign-in) and starts a
// console session.
func (c *Controller) consoleSSOSession(ctx context.Context, r *http.Request, id *oidcauth.Identity) (string, error) {
	name := strings.ToLower(strings.TrimSpace(id.Email))
	if name == "" {
		name = id.Subject
	}
	subject := id.Issuer + " " + id.Subject
	role := adminRoleOf(id.Groups, c.sso.cfg.AdminGroups)
	p := &adminPrincipal{Name: name, Via: "oidc " + subject, Agent: truncate(r.UserAgent(), 200)}
	if role == "" {
		c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
			return tx.Audit(store.AuditEntry{Actor: name, Action: "sign-in-refused", Kind: KindAdmin, Name: name})
		})
		return "", fmt.Errorf("%w: %s is in none of the identity provider groups allowed to administer Postern", ErrNotAllowed, name)
	}
	var adm *Admin
	_, _, err := c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdmin, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			adm = &Admin{ID: newID("adm"), Name: name, Role: role, Created: c.now().UTC()}
		case err != nil:
			return err
		default:
			if adm, err = decodeObj[Admin](o); err != nil {
				return err
			}
			if adm.Role == role {
				return nil
			}
			adm.Role = role
		}
		o, err = toObject(KindAdmin, adm.ID, adm.Name, adm)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		after, _ := json.Marshal(adm.view())
		return tx.Audit(store.AuditEntry{Actor: name, Action: "sso-role", Kind: KindAdmin, ObjectID: adm.ID, Name: name, After: after})
	})
	if err != nil {
		return "", err
	}
	return c.startConsoleSession(ctx, r, adm, "oidc", subject)
}
