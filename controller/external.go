package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// This file is the extension point for sign-in methods that live outside the
// controller package (single sign-on with OIDC): they authenticate the user
// their own way, then hand the controller an ExternalIdentity and the device,
// and the controller makes the same device and session records as a password
// sign-in. Their HTTP endpoints mount on the controller's mux with Handle, so
// they get the same TLS, rate and body limits.

// ExternalIdentity is a user vouched for by an external identity provider.
type ExternalIdentity struct {
	Method  string   // session method, e.g. "oidc"
	Issuer  string   // identity provider
	Subject string   // stable id at the provider
	Email   string   // the user's name in Postern
	Groups  []string // groups the provider reports; they join Postern groups of the same name
	// External is kept with the session (e.g. the refresh token) and given
	// back by ExternalSessions; never shown by the API.
	External json.RawMessage
	// ExpiresAt caps the session (zero: Config.SessionTTL).
	ExpiresAt time.Time
}

// ErrRoute is returned by Handle for a pattern that is malformed or
// conflicts with an existing route.
var ErrRoute = errors.New("cannot add route")

// Handle mounts h at pattern (net/http ServeMux syntax, e.g.
// "POST /api/v1/client/oidc/start") on the controller's API, behind the same
// TLS, rate and body limits. It may be called before or while serving.
func (c *Controller) Handle(pattern string, h http.Handler) (err error) {
	c.muxOnce.Do(c.buildHandler)
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w %q: %v", ErrRoute, pattern, v)
		}
	}()
	c.mux.Handle(pattern, h)
	return nil
}

// ClientIP is the address a request came from, as rate limits see it.
func ClientIP(r *http.Request) string { return clientIP(r) }

// SignInExternal signs a device in for an externally authenticated user: the
// user record (Source "oidc") is created or updated with the provider's
// groups, the device registered and a session made, exactly as for a password
// sign-in. dev carries the device fields of a LoginRequest.
func (c *Controller) SignInExternal(ctx context.Context, id ExternalIdentity, dev controlapi.LoginRequest) (*controlapi.LoginResponse, error) {
	email := strings.ToLower(strings.TrimSpace(id.Email))
	if err := validEmail(email); err != nil {
		return nil, fmt.Errorf("external identity: email %v", err)
	}
	if id.Method == "" {
		id.Method = "oidc"
	}
	m := c.model()
	if u, ok := m.UserByEmail[email]; ok && u.Source != "oidc" {
		// A built-in account of the same email: the provider vouches for it.
		if u.Disabled {
			return nil, fmt.Errorf("%w: account %s is disabled", ErrNotAllowed, email)
		}
	}
	var uid string
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.GetByName(KindUser, email)
		if errors.Is(err, store.ErrNotFound) {
			u := User{ID: newID(idPrefix(KindUser)), Email: email, Source: "oidc", IdPIssuer: id.Issuer, IdPSubject: id.Subject, IdPGroups: id.Groups}
			uid = u.ID
			no, err := toObject(KindUser, u.ID, email, u)
			if err != nil {
				return err
			}
			if err := tx.Put(no); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: id.Method + ":" + id.Issuer, Action: "create", Kind: KindUser, ObjectID: u.ID, Name: email, After: redact(KindUser, no.Data)})
		} else if err != nil {
			return err
		}
		uid = o.ID
		return updateRecord(tx, KindUser, o.ID, func(v *User) bool {
			if v.IdPIssuer == id.Issuer && v.IdPSubject == id.Subject && slices.Equal(v.IdPGroups, id.Groups) {
				return false
			}
			v.IdPIssuer, v.IdPSubject, v.IdPGroups = id.Issuer, id.Subject, id.Groups
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("record external user %s: %w", email, err)
	}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	resp, _, err := c.createSession(ctx, uid, PrincipalUser, id.Method, dev, id.External, id.ExpiresAt)
	return resp, err
}

// ExternalSession is a live session made by SignInExternal.
type ExternalSession struct {
	SessionID string
	UserID    string
	Email     string
	Subject   string
	External  json.RawMessage
	ExpiresAt time.Time
}

// ExternalSessions lists the live sessions made with method.
func (c *Controller) ExternalSessions(method string) []ExternalSession {
	m := c.model()
	var out []ExternalSession
	for _, s := range m.Sessions {
		if s.Method != method {
			continue
		}
		u := m.Users[s.PrincipalID]
		if u == nil {
			continue
		}
		out = append(out, ExternalSession{SessionID: s.ID, UserID: u.ID, Email: u.Email, Subject: u.IdPSubject, External: s.External, ExpiresAt: s.ExpiresAt})
	}
	slices.SortFunc(out, func(a, b ExternalSession) int { return strings.Compare(a.SessionID, b.SessionID) })
	return out
}

// UpdateExternalSession stores new external state for a session (e.g. a
// rotated refresh token) and the user's current groups.
func (c *Controller) UpdateExternalSession(ctx context.Context, sessionID string, groups []string, external json.RawMessage) error {
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		var uid string
		if err := updateRecord(tx, KindSession, sessionID, func(v *Session) bool {
			uid = v.PrincipalID
			v.External = external
			return true
		}); err != nil {
			return err
		}
		err := updateRecord(tx, KindUser, uid, func(v *User) bool {
			if slices.Equal(v.IdPGroups, groups) {
				return false
			}
			v.IdPGroups = groups
			return true
		})
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("update session %s: %w", sessionID, err)
	}
	return c.reload(ctx)
}

// RevokeSession ends one session (as DELETE /api/v1/sessions/{id} does, the
// device's access ends everywhere).
func (c *Controller) RevokeSession(ctx context.Context, actor, sessionID string) error {
	m := c.model()
	s, ok := m.SessionByID[sessionID]
	if !ok {
		return fmt.Errorf("session %s: %w", sessionID, store.ErrNotFound)
	}
	if err := c.revokeSession(ctx, actor, sessionID); err != nil {
		return err
	}
	return c.revokeDevice(ctx, actor, s.DeviceID)
}

// RevokeDevice ends a device's access everywhere.
func (c *Controller) RevokeDevice(ctx context.Context, actor, deviceID string) error {
	return c.revokeDevice(ctx, actor, deviceID)
}
