package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// The model side of the WebAuthn endpoints (api.WebAuthnSession,
// api.WebAuthn); the ceremonies themselves are in webauthn.go.

func (c *Controller) ceremonyView(cer *webauthnCeremony) controlapi.WebAuthnCeremony {
	v := controlapi.WebAuthnCeremony{ID: cer.ID, Kind: cer.Kind, State: cer.State, Expires: cer.Expires, Error: cer.Error}
	if v.State == controlapi.WebAuthnPending && !c.now().Before(cer.Expires) {
		v.State, v.Error = controlapi.WebAuthnFailed, "expired: the browser did not finish in time"
	}
	return v
}

// BeginWebAuthn starts a ceremony and answers it with its page's URL
// (api.WebAuthnSession).
func (cs *clientSession) BeginWebAuthn(ctx context.Context, register bool) (controlapi.WebAuthnCeremony, int, error) {
	c := cs.c
	u, err := cs.user()
	if err != nil {
		return controlapi.WebAuthnCeremony{}, http.StatusForbidden, err
	}
	cer, secret, status, err := c.beginWebAuthn(ctx, cs.s, cs.m, u, register)
	if err != nil {
		return controlapi.WebAuthnCeremony{}, status, err
	}
	v := c.ceremonyView(cer)
	v.URL = c.issuer + controlapi.PathWebAuthnPage + "#" + secret
	return v, http.StatusOK, nil
}

// WebAuthnCeremony is ceremony id of the session, with the second factor's
// status once it is done (api.WebAuthnSession).
func (cs *clientSession) WebAuthnCeremony(ctx context.Context, id string) (controlapi.WebAuthnCeremony, error) {
	c, s := cs.c, cs.s
	var cer webauthnCeremony
	err := c.store.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(KindWebAuthnCeremony, id)
		if err != nil {
			return err
		}
		return json.Unmarshal(o.Data, &cer)
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && cer.SessionID != s.ID) {
		return controlapi.WebAuthnCeremony{}, api.ErrNoCeremony
	}
	if err != nil {
		return controlapi.WebAuthnCeremony{}, fmt.Errorf("load WebAuthn ceremony: %w", err)
	}
	v := c.ceremonyView(&cer)
	if v.State == controlapi.WebAuthnDone {
		m := c.model()
		if ns := m.SessionByID[s.ID]; ns != nil {
			s = ns
		}
		st := c.mfaStatus(m, s, s.PrincipalID)
		v.MFA = &st
	}
	return v, nil
}

// RemoveSecurityKeys removes all of the user's security keys; it needs a
// step-up within mfaRemoveWindow (api.WebAuthnSession).
func (cs *clientSession) RemoveSecurityKeys(ctx context.Context) error {
	c, s := cs.c, cs.s
	u, err := cs.user()
	if err != nil {
		return err
	}
	keys := cs.m.access.webauthn[u.ID]
	if len(keys) == 0 {
		return ErrWebAuthnNoKey
	}
	if !c.recentStepUp(s) {
		return &api.Forbidden{Msg: fmt.Sprintf("removing security keys needs a step-up within %s: run postern mfa --webauthn (or postern mfa) first", mfaRemoveWindow)}
	}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.Delete(KindWebAuthn, k.ID); err != nil {
				return err
			}
			if err := tx.Audit(store.AuditEntry{Actor: u.Email, Action: "mfa-remove", Kind: KindWebAuthn, ObjectID: k.ID, Name: u.Email, Device: s.DeviceID}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove security keys: %w", err)
	}
	return nil
}

// WebAuthnOptions are the options the browser runs the pending ceremony
// named by secret with (api.WebAuthn).
func (c *Controller) WebAuthnOptions(ctx context.Context, secret string) (controlapi.WebAuthnOptions, int, error) {
	cer, status, err := c.pendingCeremony(ctx, secret)
	if err != nil {
		return controlapi.WebAuthnOptions{}, status, err
	}
	u, ok := c.model().Users[cer.UserID]
	if !ok {
		return controlapi.WebAuthnOptions{}, http.StatusUnauthorized, fmt.Errorf("%v: the account no longer exists", ErrUnauthenticated)
	}
	return controlapi.WebAuthnOptions{Kind: cer.Kind, User: u.Email, PublicKey: cer.Options}, http.StatusOK, nil
}

// FinishWebAuthn verifies the browser's credential and ends the ceremony
// (api.WebAuthn).
func (c *Controller) FinishWebAuthn(ctx context.Context, req controlapi.WebAuthnFinish) (controlapi.WebAuthnCeremony, int, error) {
	cer, status, err := c.finishWebAuthn(ctx, req)
	if err != nil {
		if status == http.StatusInternalServerError {
			c.log.Error("WebAuthn finish", "err", err)
		}
		return controlapi.WebAuthnCeremony{}, status, err
	}
	c.log.Info("WebAuthn ceremony done", "kind", cer.Kind, "user", cer.UserID, "device", cer.DeviceID)
	return c.ceremonyView(cer), http.StatusOK, nil
}
