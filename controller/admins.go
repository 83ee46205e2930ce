package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// Admin identities (docs/console.md): named administrators with a role,
// signing in to the console with a password (or, with single sign-on, as
// users of a configured admin group) and calling the admin API with their
// own tokens. The bootstrap DATA/admin-token stays and acts as an owner.
//
// Admins, their API tokens and their console sessions are objects of the
// store (both backends), outside the policy model: they never reach a
// snapshot, so writing them wakes no push subscriber. Their kinds are named
// by package adminapi.
const (
	KindAdmin        = adminapi.KindAdmin
	KindAdminToken   = adminapi.KindAdminToken
	KindAdminSession = adminapi.KindAdminSession
)

// Admin roles.
const (
	RoleOwner    = "owner"    // everything, including admins
	RoleAdmin    = "admin"    // network, resources, groups, users, connectors, relays, access requests
	RoleApprover = "approver" // access requests only
	RoleAuditor  = "auditor"  // read-only, including the audit log and events
)

// capability is one kind of admin API operation.
type capability uint8

const (
	capRead    capability = 1 << iota // read the configuration, state, audit log and events
	capWrite                          // change the configuration and state
	capApprove                        // decide access requests
	capAdmins                         // manage admins, their tokens and sessions
	capSelf                           // see who one is
)

var roleCaps = map[string]capability{
	RoleOwner:    capRead | capWrite | capApprove | capAdmins | capSelf,
	RoleAdmin:    capRead | capWrite | capApprove | capSelf,
	RoleApprover: capApprove | capSelf,
	RoleAuditor:  capRead | capSelf,
}

// Roles lists the admin roles, most powerful first.
var Roles = []string{RoleOwner, RoleAdmin, RoleApprover, RoleAuditor}

func validRole(role string) error {
	if _, ok := roleCaps[role]; !ok {
		return fmt.Errorf("role %q is not one of %s", role, strings.Join(Roles, ", "))
	}
	return nil
}

// Lifetimes of console sessions: absolute, and since the last request.
const (
	adminSessionTTL  = 12 * time.Hour
	adminSessionIdle = time.Hour
	// adminTouchEvery: last-used times are written at most this often.
	adminTouchEvery = time.Minute
)

// Admin is a stored administrator.
type Admin struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"` // login name, usually an email address
	Role         string    `json:"role"`
	PasswordHash string    `json:"password_hash,omitempty"`
	Created      time.Time `json:"created"`
}

// AdminToken is a stored admin API token (only its hash).
type AdminToken struct {
	ID        string    `json:"id"`
	AdminID   string    `json:"admin_id"`
	Name      string    `json:"name,omitempty"` // what it is for
	Role      string    `json:"role"`
	TokenHash string    `json:"token_sha256"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
}

// AdminSession is a stored console session (only its cookie's hash).
type AdminSession struct {
	ID        string    `json:"id"`
	AdminID   string    `json:"admin_id"`
	Method    string    `json:"method"` // password or oidc
	Subject   string    `json:"subject,omitempty"`
	TokenHash string    `json:"token_sha256"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at"`
	LastSeen  time.Time `json:"last_seen"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
}

func (a *Admin) view() AdminView {
	return AdminView{ID: a.ID, Name: a.Name, Role: a.Role, HasPassword: a.PasswordHash != "", Created: a.Created}
}

// adminTokenPrefix starts every admin API token (the bootstrap one is pat_).
const adminTokenPrefix = "pak_"

// errAdminInput wraps bad input to the admin-management API (400).
var errAdminInput = api.ErrAdminInput

// isAdminKind reports whether kind is an admin identity record.
func isAdminKind(kind string) bool {
	return kind == KindAdmin || kind == KindAdminToken || kind == KindAdminSession || kind == KindAppliedFile
}

// adminOnly reports whether every change is to admin identity records, which
// no snapshot shows.
func adminOnly(changes []store.Object) bool {
	for _, o := range changes {
		if !isAdminKind(o.Kind) {
			return false
		}
	}
	return len(changes) > 0
}

func decodeObj[T any](o store.Object) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(o.Data, v); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", o.Kind, o.ID, err)
	}
	return v, nil
}

// AddAdmin creates an admin. password may be empty (single sign-on only).
func (c *Controller) AddAdmin(ctx context.Context, name, role, password string) (*AdminView, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 254 || strings.ContainsAny(name, " \t\r\n") {
		return nil, fmt.Errorf("%w: name: must be 1 to 254 characters without spaces (an email address or user name)", errAdminInput)
	}
	if err := validRole(role); err != nil {
		return nil, fmt.Errorf("%w: %v", errAdminInput, err)
	}
	a := &Admin{ID: newID("adm"), Name: name, Role: role, Created: c.now().UTC()}
	if password != "" {
		if len(password) < 12 {
			return nil, fmt.Errorf("%w: password: must be at least 12 characters", errAdminInput)
		}
		h, err := hashPassword(password)
		if err != nil {
			return nil, err
		}
		a.PasswordHash = h
	}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		if _, err := tx.GetByName(KindAdmin, name); err == nil {
			return fmt.Errorf("admin %q: %w", name, store.ErrConflict)
		}
		o, err := toObject(KindAdmin, a.ID, a.Name, a)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		after, _ := json.Marshal(a.view())
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "create", Kind: KindAdmin, ObjectID: a.ID, Name: a.Name, After: after})
	})
	if err != nil {
		return nil, err
	}
	v := a.view()
	return &v, nil
}

// UpdateAdmin changes an admin's role and, when password is not empty, its
// password. The admin's tokens keep their role but never exceed the admin's.
func (c *Controller) UpdateAdmin(ctx context.Context, key, role, password string) (*AdminView, error) {
	if role != "" {
		if err := validRole(role); err != nil {
			return nil, fmt.Errorf("%w: %v", errAdminInput, err)
		}
	}
	hash := ""
	if password != "" {
		if len(password) < 12 {
			return nil, fmt.Errorf("%w: password: must be at least 12 characters", errAdminInput)
		}
		var err error
		if hash, err = hashPassword(password); err != nil {
			return nil, err
		}
	}
	var out AdminView
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := lookupTx(tx, KindAdmin, key)
		if err != nil {
			return err
		}
		a, err := decodeObj[Admin](o)
		if err != nil {
			return err
		}
		before, _ := json.Marshal(a.view())
		if role != "" {
			a.Role = role
		}
		if hash != "" {
			a.PasswordHash = hash
		}
		if o, err = toObject(KindAdmin, a.ID, a.Name, a); err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		out = a.view()
		after, _ := json.Marshal(out)
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "update", Kind: KindAdmin, ObjectID: a.ID, Name: a.Name, Before: before, After: after})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func lookupTx(tx store.Tx, kind, key string) (store.Object, error) {
	o, err := tx.Get(kind, key)
	if errors.Is(err, store.ErrNotFound) {
		o, err = tx.GetByName(kind, key)
	}
	return o, err
}

// RemoveAdmin deletes an admin with its tokens and console sessions.
func (c *Controller) RemoveAdmin(ctx context.Context, key string) error {
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := lookupTx(tx, KindAdmin, key)
		if err != nil {
			return err
		}
		for _, kind := range []string{KindAdminToken, KindAdminSession} {
			objs, err := tx.List(kind)
			if err != nil {
				return err
			}
			for _, x := range objs {
				var ref struct {
					AdminID string `json:"admin_id"`
				}
				if json.Unmarshal(x.Data, &ref) == nil && ref.AdminID == o.ID {
					if err := tx.Delete(kind, x.ID); err != nil {
						return err
					}
				}
			}
		}
		if err := tx.Delete(KindAdmin, o.ID); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "delete", Kind: KindAdmin, ObjectID: o.ID, Name: o.Name})
	})
	return err
}

// ListAdmins returns every admin, by name.
func (c *Controller) ListAdmins(ctx context.Context) ([]AdminView, error) {
	var out []AdminView
	err := c.store.View(ctx, func(tx store.Tx) error {
		objs, err := tx.List(KindAdmin)
		if err != nil {
			return err
		}
		for _, o := range objs {
			a, err := decodeObj[Admin](o)
			if err != nil {
				return err
			}
			out = append(out, a.view())
		}
		return nil
	})
	slices.SortFunc(out, func(a, b AdminView) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// CreateAdminToken makes an API token for the admin named (or with id) key.
// role "" takes the admin's; a role the admin does not hold is refused.
// The secret is in the returned view only.
func (c *Controller) CreateAdminToken(ctx context.Context, key, role, name string, ttl time.Duration) (*AdminTokenView, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("%w: ttl: must not be negative", errAdminInput)
	}
	var out AdminTokenView
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := lookupTx(tx, KindAdmin, key)
		if err != nil {
			return fmt.Errorf("admin %q: %w", key, err)
		}
		a, err := decodeObj[Admin](o)
		if err != nil {
			return err
		}
		if role == "" {
			role = a.Role
		}
		if err := validRole(role); err != nil {
			return fmt.Errorf("%w: %v", errAdminInput, err)
		}
		if roleCaps[role]&^roleCaps[a.Role] != 0 {
			return fmt.Errorf("%w: role: admin %s is %s and cannot hold a %s token", errAdminInput, a.Name, a.Role, role)
		}
		secret := adminTokenPrefix + api.RandomHex(32)
		t := AdminToken{ID: newID("atk"), AdminID: a.ID, Name: name, Role: role, TokenHash: sha256Hex(secret), Created: c.now().UTC()}
		if ttl > 0 {
			t.ExpiresAt = t.Created.Add(ttl)
		}
		to, err := toObject(KindAdminToken, t.ID, t.TokenHash, &t)
		if err != nil {
			return err
		}
		if err := tx.Put(to); err != nil {
			return err
		}
		out = AdminTokenView{ID: t.ID, Admin: a.Name, Name: t.Name, Role: t.Role, Created: t.Created, ExpiresAt: t.ExpiresAt}
		after, _ := json.Marshal(out)
		out.Token = secret
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "create", Kind: KindAdminToken, ObjectID: t.ID, Name: a.Name, After: after})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// adminNames maps admin ids to names.
func adminNames(tx store.Tx) (map[string]string, error) {
	objs, err := tx.List(KindAdmin)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, o := range objs {
		names[o.ID] = o.Name
	}
	return names, nil
}

// ListAdminTokens returns every admin token (never a secret), newest first.
func (c *Controller) ListAdminTokens(ctx context.Context) ([]AdminTokenView, error) {
	var out []AdminTokenView
	err := c.store.View(ctx, func(tx store.Tx) error {
		names, err := adminNames(tx)
		if err != nil {
			return err
		}
		objs, err := tx.List(KindAdminToken)
		if err != nil {
			return err
		}
		for _, o := range objs {
			t, err := decodeObj[AdminToken](o)
			if err != nil {
				return err
			}
			out = append(out, AdminTokenView{ID: t.ID, Admin: names[t.AdminID], Name: t.Name, Role: t.Role, Created: t.Created, ExpiresAt: t.ExpiresAt, LastUsed: t.LastUsed})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b AdminTokenView) int { return b.Created.Compare(a.Created) })
	return out, err
}

// ListAdminSessions returns the console sessions not expired, newest first.
func (c *Controller) ListAdminSessions(ctx context.Context) ([]AdminSessionView, error) {
	var out []AdminSessionView
	now := c.now()
	err := c.store.View(ctx, func(tx store.Tx) error {
		names, err := adminNames(tx)
		if err != nil {
			return err
		}
		objs, err := tx.List(KindAdminSession)
		if err != nil {
			return err
		}
		for _, o := range objs {
			s, err := decodeObj[AdminSession](o)
			if err != nil {
				return err
			}
			if sessionLive(s, now) {
				out = append(out, AdminSessionView{ID: s.ID, Admin: names[s.AdminID], Method: s.Method, Created: s.Created,
					ExpiresAt: s.ExpiresAt, LastSeen: s.LastSeen, IP: s.IP, UserAgent: s.UserAgent})
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b AdminSessionView) int { return b.Created.Compare(a.Created) })
	return out, err
}

func sessionLive(s *AdminSession, now time.Time) bool {
	return now.Before(s.ExpiresAt) && now.Sub(s.LastSeen) < adminSessionIdle
}

// RevokeAdminCredential deletes an admin token or console session by id.
func (c *Controller) RevokeAdminCredential(ctx context.Context, kind, id string) error {
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.Get(kind, id)
		if err != nil {
			return err
		}
		var ref struct {
			AdminID string `json:"admin_id"`
		}
		json.Unmarshal(o.Data, &ref)
		name := ref.AdminID
		if a, err := tx.Get(KindAdmin, ref.AdminID); err == nil {
			name = a.Name
		}
		if err := tx.Delete(kind, id); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "revoke", Kind: kind, ObjectID: id, Name: name})
	})
	return err
}
