package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/oauth2"
)

// Refresh re-asks the identity provider about a user with the refresh token
// kept from a sign-in. It returns the user's current identity (groups may
// have changed) and the refresh token to keep from now on. ErrRevoked means
// the identity provider no longer vouches for the user: end their sessions.
// ErrIdP means nothing was decided (the provider is unreachable): keep the
// sessions and try again later.
func (p *Provider) Refresh(ctx context.Context, subject, refreshToken string) (*Grant, error) {
	if refreshToken == "" {
		return nil, fmt.Errorf("%w: no refresh token was kept for subject %q", ErrRevoked, subject)
	}
	ts := p.oauth.TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)})
	tok, err := ts.Token()
	if err != nil {
		err = oauthError("refresh", err)
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrExpired) {
			return nil, fmt.Errorf("%w: %v", ErrRevoked, err)
		}
		return nil, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken // the provider keeps the old one valid
	}
	var id *Identity
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		id, err = p.verify(ctx, raw, "", tok)
		if err != nil {
			if errors.Is(err, ErrRefused) {
				return nil, fmt.Errorf("%w: %v", ErrRevoked, err)
			}
			return nil, err
		}
	} else {
		// No new ID token: the userinfo endpoint speaks for the provider.
		ui, err := p.provider.UserInfo(p.ctx(ctx), oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, fmt.Errorf("%w: userinfo after refresh: %v", ErrIdP, err)
		}
		var claims map[string]any
		if err := ui.Claims(&claims); err != nil {
			return nil, fmt.Errorf("%w: userinfo claims: %v", ErrIdP, err)
		}
		id, err = p.identity(p.cfg.Issuer, ui.Subject, tok.Expiry, claims)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRevoked, err)
		}
	}
	if id.Subject != subject {
		return nil, fmt.Errorf("%w: the refreshed identity is subject %q, not %q", ErrRevoked, id.Subject, subject)
	}
	return &Grant{Identity: *id, RefreshToken: tok.RefreshToken, AccessExpiry: tok.Expiry}, nil
}

// Session is an OIDC sign-in the controller keeps.
type Session struct {
	ID           string // the controller's own key (user or session id)
	Subject      string
	RefreshToken string
}

// SessionStore is what RefreshDue needs from the controller's store.
type SessionStore interface {
	// DueOIDCSessions lists the sessions to re-check now.
	DueOIDCSessions(ctx context.Context, now time.Time) ([]Session, error)
	// UpdateOIDCSession keeps the new refresh token, groups and next due time
	// (about g.AccessExpiry, at least a minute from now).
	UpdateOIDCSession(ctx context.Context, id string, g *Grant) error
	// RevokeOIDCSession ends the session (and the device's access) because
	// the identity provider no longer vouches for the user.
	RevokeOIDCSession(ctx context.Context, id string, reason error) error
}

// RefreshDue refreshes every due session once: updated sessions get their
// new groups, refused ones are revoked, and those the provider could not
// answer for are left as they are (fail static).
func (p *Provider) RefreshDue(ctx context.Context, st SessionStore) (updated, revoked int, err error) {
	due, err := st.DueOIDCSessions(ctx, p.now())
	if err != nil {
		return 0, 0, fmt.Errorf("list due oidc sessions: %w", err)
	}
	var errs []error
	for _, s := range due {
		g, rerr := p.Refresh(ctx, s.Subject, s.RefreshToken)
		switch {
		case rerr == nil:
			if err := st.UpdateOIDCSession(ctx, s.ID, g); err != nil {
				errs = append(errs, fmt.Errorf("update oidc session %s: %w", s.ID, err))
				continue
			}
			updated++
		case errors.Is(rerr, ErrRevoked):
			if err := st.RevokeOIDCSession(ctx, s.ID, rerr); err != nil {
				errs = append(errs, fmt.Errorf("revoke oidc session %s: %w", s.ID, err))
				continue
			}
			revoked++
		default:
			errs = append(errs, fmt.Errorf("refresh oidc session %s: %w", s.ID, rerr))
		}
	}
	return updated, revoked, errors.Join(errs...)
}

// RunRefresher calls RefreshDue every interval until ctx ends.
func (p *Provider) RunRefresher(ctx context.Context, st SessionStore, interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		up, rev, err := p.RefreshDue(ctx, st)
		switch {
		case rev > 0:
			log.Info("oidc refresh", "updated", up, "revoked", rev)
		case up > 0:
			log.Debug("oidc refresh", "updated", up)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("oidc refresh", "err", err)
		}
	}
}
