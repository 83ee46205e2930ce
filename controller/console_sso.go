package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/console"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/store"
)

// Console single sign-on: admins are identity-provider users in one of the
// groups OIDCConfig.AdminGroups maps to a role. The controller is the OIDC
// client (authorization code with PKCE, its confidential client secret);
// controller/console runs the browser's side of the flow.

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
	return append(r, c.issuer+console.OIDCCallbackPath)
}

// ConsoleSSO reports whether admins may sign in with single sign-on
// (console.Sessions).
func (c *Controller) ConsoleSSO() bool {
	return c.sso != nil && len(c.sso.cfg.AdminGroups) > 0
}

// ConsoleOIDCProvider is the identity provider, for the end of a console
// sign-in (console.Sessions).
func (c *Controller) ConsoleOIDCProvider() (api.OIDCProvider, error) {
	if c.sso == nil {
		return nil, api.ErrSSOOff
	}
	p, err := c.sso.provider()
	if err != nil {
		return nil, err
	}
	return p, nil
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

// ConsoleSSOSignIn maps a verified identity to an admin (created on first
// sign-in; the role follows the groups at every sign-in) and starts a
// console session; it returns the cookie secret (console.Sessions).
func (c *Controller) ConsoleSSOSignIn(ctx context.Context, r *http.Request, id *oidcauth.Identity) (string, error) {
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
		return "", fmt.Errorf("admin %s from single sign-on: %w", name, err)
	}
	return c.startConsoleSession(ctx, r, adm, "oidc", subject)
}
