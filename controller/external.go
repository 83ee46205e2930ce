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
	"postern.dev/postern/controller/api"
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
	Method  string // session method, e.g. "oidc"
	Issuer  string // identity provider
	Subject string // stable id at the provider
	Email   string // the user's name in Postern
	// EmailVerified: the provider vouches that the user controls Email
	// (email_verified true). Only then may a first sign-in link an account
	// that already exists, or that groups name, by e-mail; otherwise an
	// administrator binds the subject to the account (oidc_subject).
	EmailVerified bool
	Groups        []string // groups the provider reports; they join Postern groups of the same name
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
func ClientIP(r *http.Request) string { return api.ClientIP(r) }

// SignInExternal signs a device in for an externally authenticated user: the
// user record is found by issuer and subject (a binding made by an earlier
// sign-in, or by an administrator through oidc_subject), or else by a
// verified email on first sign-in, created when missing, and updated with
// the provider's email and groups; the device is registered and a session
// made, exactly as for a password sign-in. dev carries the device fields of
// a LoginRequest.
func (c *Controller) SignInExternal(ctx context.Context, id ExternalIdentity, dev controlapi.LoginRequest) (*controlapi.LoginResponse, error) {
	resp, _, err := c.signInExternal(ctx, id, dev)
	return resp, err
}

func (c *Controller) signInExternal(ctx context.Context, id ExternalIdentity, dev controlapi.LoginRequest) (*controlapi.LoginResponse, int, error) {
	email := strings.ToLower(strings.TrimSpace(id.Email))
	if err := validEmail(email); err != nil {
		return nil, http.StatusForbidden, fmt.Errorf("external identity: email %v", err)
	}
	if id.Issuer == "" || id.Subject == "" {
		return nil, http.StatusForbidden, errors.New("external identity: issuer and subject are required")
	}
	if id.Method == "" {
		id.Method = sessionMethodOIDC
	}
	if id.Groups == nil {
		id.Groups = []string{}
	}
	var uid string
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		uid = ""
		var users []User
		if err := listInto(tx, KindUser, &users); err != nil {
			return err
		}
		var bound, byEmail *User
		for i := range users {
			u := &users[i]
			// An administrator's binding (oidc_subject) names no issuer
			// until the first sign-in records it; it wins over an account
			// single sign-on created for the same subject.
			if u.IdPSubject == id.Subject && (u.IdPIssuer == id.Issuer || u.IdPIssuer == "") &&
				(bound == nil || (bound.Source == "oidc" && u.Source != "oidc")) {
				bound = u
			}
			if u.Email == email {
				byEmail = u
			}
		}
		unverified := func(what string) error {
			return fmt.Errorf("%w: %s, and the identity provider did not verify that subject %q owns that address (email_verified is not true); an administrator must bind the subject to the account (users: - email: %s, oidc_subject: %q)",
				ErrIdentityConflict, what, id.Subject, email, id.Subject)
		}
		u := bound
		switch {
		case bound != nil:
			if bound.Email != email && bound.Source == "oidc" {
				// The provider renamed the user: follow, unless the new
				// address belongs to another account.
				if byEmail != nil {
					return fmt.Errorf("%w: %s (subject %q) now has the email %s, which another Postern account holds", ErrIdentityConflict, bound.Email, id.Subject, email)
				}
			}
		case byEmail != nil:
			if byEmail.IdPSubject != "" {
				return fmt.Errorf("%w: the account %s is bound to another identity (issuer %s, subject %q); an administrator must delete it before subject %q can use that email",
					ErrIdentityConflict, email, byEmail.IdPIssuer, byEmail.IdPSubject, id.Subject)
			}
			if !id.EmailVerified {
				return unverified("the account " + email + " already exists")
			}
			u = byEmail // first sign-in of an account listed in network.yaml
		default:
			if !id.EmailVerified {
				var groups []Group
				if err := listInto(tx, KindGroup, &groups); err != nil {
					return err
				}
				for _, g := range groups {
					if slices.Contains(g.Users, email) {
						return unverified("group " + g.Name + " names " + email)
					}
				}
			}
			nu := User{ID: newID(idPrefix(KindUser)), Email: email, Source: "oidc", IdPIssuer: id.Issuer, IdPSubject: id.Subject, IdPGroups: id.Groups}
			uid = nu.ID
			no, err := toObject(KindUser, nu.ID, email, nu)
			if err != nil {
				return err
			}
			if err := tx.Put(no); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: id.Method + ":" + id.Issuer, Action: "create", Kind: KindUser, ObjectID: nu.ID, Name: email, After: redact(KindUser, no.Data)})
		}
		if u.Disabled {
			return fmt.Errorf("%w: account %s is disabled", ErrNotAllowed, u.Email)
		}
		uid = u.ID
		before, err := tx.Get(KindUser, u.ID)
		if err != nil {
			return err
		}
		changed := false
		if u.Email != email && u.Source == "oidc" {
			u.Email, changed = email, true
		}
		if u.IdPIssuer != id.Issuer || u.IdPSubject != id.Subject || !slices.Equal(u.IdPGroups, id.Groups) {
			u.IdPIssuer, u.IdPSubject, u.IdPGroups, changed = id.Issuer, id.Subject, id.Groups, true
		}
		if !changed {
			return nil
		}
		no, err := toObject(KindUser, u.ID, u.Email, u)
		if err != nil {
			return err
		}
		if err := tx.Put(no); err != nil {
			return err
		}
		if before.Name != u.Email {
			return tx.Audit(store.AuditEntry{Actor: id.Method + ":" + id.Issuer, Action: "update", Kind: KindUser, ObjectID: u.ID, Name: u.Email,
				Before: redact(KindUser, before.Data), After: redact(KindUser, no.Data)})
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrNotAllowed), errors.Is(err, ErrIdentityConflict):
		c.log.Warn("external sign-in refused", "email", email, "issuer", id.Issuer, "subject", id.Subject, "err", err)
		return nil, http.StatusForbidden, err
	case err != nil:
		return nil, http.StatusInternalServerError, fmt.Errorf("record external user %s: %w", email, err)
	}
	if err := c.reload(ctx); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	return c.createSession(ctx, signIn{uid, PrincipalUser, id.Method, externalCredential(id.Method, id.Issuer, id.Subject)}, dev, id.External, id.ExpiresAt)
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
