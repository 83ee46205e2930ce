package controller

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// adminPrincipal is who calls the admin API, and with which rights.
type adminPrincipal struct {
	Name    string // the admin's name; "admin" for the bootstrap token
	AdminID string // "" for the bootstrap token
	Role    string // the effective role
	Via     string // how they authenticated, for the audit log
	Agent   string // the request's User-Agent
	caps    capability
	// SessionID is set for console sessions.
	SessionID string
}

func (p *adminPrincipal) can(c capability) bool { return p != nil && p.caps&c == c }

const ctxAdmin ctxKey = 100

func withAdmin(ctx context.Context, p *adminPrincipal) context.Context {
	return context.WithValue(ctx, ctxAdmin, p)
}

func adminFrom(ctx context.Context) *adminPrincipal {
	p, _ := ctx.Value(ctxAdmin).(*adminPrincipal)
	return p
}

// adminName is the name an admin action is recorded under ("admin" without
// a named admin).
func adminName(ctx context.Context) string {
	if p := adminFrom(ctx); p != nil && p.Name != "" {
		return p.Name
	}
	return "admin"
}

// attribute fills in the real actor of an admin audit entry: entries the
// admin API writes as "admin" name the admin, how they authenticated and
// their user agent.
func attribute(ctx context.Context, e *store.AuditEntry) {
	p := adminFrom(ctx)
	if p == nil {
		return
	}
	if e.Actor == "admin" {
		e.Actor = p.Name
	}
	if e.ActorVia == "" {
		e.ActorVia = p.Via
	}
	if e.UserAgent == "" {
		e.UserAgent = p.Agent
	}
}

var errAdminAuth = api.ErrAdminAuth

// authenticateBearer resolves an admin API bearer token: the bootstrap
// admin-token (an owner) or a per-admin token.
func (c *Controller) authenticateBearer(r *http.Request) (*adminPrincipal, error) {
	t := api.Bearer(r)
	if t == "" {
		return nil, errAdminAuth
	}
	agent := truncate(r.UserAgent(), 200)
	if subtle.ConstantTimeCompare([]byte(t), []byte(c.adminTok)) == 1 {
		return &adminPrincipal{Name: "admin", Role: RoleOwner, Via: "bootstrap admin-token", Agent: agent, caps: roleCaps[RoleOwner]}, nil
	}
	if !strings.HasPrefix(t, adminTokenPrefix) {
		return nil, errAdminAuth
	}
	var tok *AdminToken
	var adm *Admin
	err := c.store.View(r.Context(), func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdminToken, sha256Hex(t))
		if err != nil {
			return err
		}
		if tok, err = decodeObj[AdminToken](o); err != nil {
			return err
		}
		ao, err := tx.Get(KindAdmin, tok.AdminID)
		if err != nil {
			return err
		}
		adm, err = decodeObj[Admin](ao)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or revoked admin token", errAdminAuth)
	}
	if err != nil {
		return nil, err
	}
	now := c.now()
	if !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt) {
		return nil, fmt.Errorf("%w: admin token %s expired at %s", errAdminAuth, tok.ID, tok.ExpiresAt.Format(time.RFC3339))
	}
	if now.Sub(tok.LastUsed) >= adminTouchEvery {
		c.touchAdminRecord(r.Context(), KindAdminToken, tok.ID, now)
	}
	return &adminPrincipal{Name: adm.Name, AdminID: adm.ID, Role: tok.Role, Via: "token " + tok.ID, Agent: agent,
		caps: roleCaps[tok.Role] & roleCaps[adm.Role]}, nil
}

// touchAdminRecord moves a token's LastUsed or a session's LastSeen to now.
// A failure is logged: it must not refuse the request.
func (c *Controller) touchAdminRecord(ctx context.Context, kind, id string, now time.Time) {
	_, _, err := c.commit(context.WithoutCancel(ctx), func(tx store.Tx) error {
		switch kind {
		case KindAdminToken:
			return updateRecord(tx, kind, id, func(v *AdminToken) bool { v.LastUsed = now.UTC(); return true })
		default:
			return updateRecord(tx, kind, id, func(v *AdminSession) bool { v.LastSeen = now.UTC(); return true })
		}
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("record admin credential use", "kind", kind, "id", id, "err", err)
	}
}

// routeNeeds is the capability an admin API route needs, from its pattern.
func routeNeeds(method, pattern string) capability {
	_, path, _ := strings.Cut(pattern, " ")
	switch {
	case path == "/api/v1/me":
		return capSelf
	case strings.HasPrefix(path, controlapi.PathAccessRequests):
		return capApprove // listing too: readers may list them as well (allowed)
	case strings.HasPrefix(path, "/api/v1/admin"):
		if method == http.MethodGet {
			return capRead
		}
		return capAdmins
	}
	if method == http.MethodGet || method == http.MethodHead {
		return capRead
	}
	return capWrite
}

// allowed reports whether p may call the route of r.
func (p *adminPrincipal) allowed(r *http.Request) bool {
	need := routeNeeds(r.Method, r.Pattern)
	if p.can(need) {
		return true
	}
	// Readers (auditors) may also see access requests.
	return need == capApprove && r.Method == http.MethodGet && p.can(capRead)
}

// AuthorizeAdmin authenticates an admin API call (a bearer token, or a
// console session the console resolved itself), checks the caller's role
// for the route and returns the context carrying the principal, for the
// audit log (api.Auth).
func (c *Controller) AuthorizeAdmin(r *http.Request) (context.Context, error) {
	p := adminFrom(r.Context())
	if p == nil {
		var err error
		if p, err = c.authenticateBearer(r); err != nil {
			return nil, err
		}
	}
	if !p.allowed(r) {
		return nil, &api.Forbidden{Msg: fmt.Sprintf("%s (role %s) may not %s %s", p.Name, p.Role, r.Method, r.URL.Path)}
	}
	return withAdmin(r.Context(), p), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
