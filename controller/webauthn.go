package controller

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// WebAuthn second factor (github.com/go-webauthn/webauthn does every
// verification). A ceremony starts with the client's session (POST
// PathMFAWebAuthn) and gets a one-time secret; the browser opens
// PathWebAuthnPage with the secret in the URL fragment, fetches the options
// with it, runs navigator.credentials and posts the result back; the client
// polls the ceremony. A ceremony is single use: its first finish, right or
// wrong, ends it, so a challenge is never verified twice. A successful
// assertion (or registration) is a step-up exactly as a TOTP code is: it
// sets the session's MFAAt, under the same failure limit and with the same
// audit actions (mfa-enroll, mfa-confirm, mfa-verify, mfa-failed).
//
// The relying party is the public URL's host (origin scheme://host:port): a
// controller whose public URL is an IP address cannot offer WebAuthn.

const (
	KindWebAuthn         = "webauthn"          // per security key, named by its base64url credential id
	KindWebAuthnCeremony = "webauthn_ceremony" // per ceremony, named by its secret's SHA-256

	webauthnCeremonyTTL = 5 * time.Minute
	// webauthnKeep: finished and expired ceremonies stay this long for the
	// client's poll, then the next begin deletes them.
	webauthnKeep   = time.Hour
	webauthnMaxKey = 10 // security keys per user

	amrOTP = "otp" // RFC 8176: one-time password
	amrHWK = "hwk" // RFC 8176: proof of possession of a hardware-secured key
)

// Errors of WebAuthn ceremonies.
var (
	ErrWebAuthnUnavailable = errors.New("WebAuthn is not available on this controller")
	ErrWebAuthnCeremony    = errors.New("unknown or finished WebAuthn ceremony; start again (postern mfa --webauthn)")
	ErrWebAuthnVerify      = errors.New("WebAuthn verification failed")
	ErrWebAuthnNoKey       = api.ErrNoSecurityKey
)

// WebAuthnKey is one enrolled security key of a user: the library's
// credential record (public key, sign counter, flags) and when it was
// added and last used. Its public key is not a secret.
type WebAuthnKey struct {
	ID         string              `json:"id"`
	UserID     string              `json:"user_id"`
	Credential webauthn.Credential `json:"credential"`
	Created    time.Time           `json:"created"`
	LastUsed   time.Time           `json:"last_used,omitzero"`
}

// webauthnCeremony is a started registration or assertion: the library's
// session data (challenge, allowed credentials) kept server side.
type webauthnCeremony struct {
	ID        string               `json:"id"`
	Kind      string               `json:"kind"` // controlapi.WebAuthnRegister or WebAuthnLogin
	UserID    string               `json:"user_id"`
	SessionID string               `json:"session_id"`
	DeviceID  string               `json:"device_id"`
	Data      webauthn.SessionData `json:"data"`
	Options   json.RawMessage      `json:"options"`
	Expires   time.Time            `json:"expires"`
	State     string               `json:"state"`
	Error     string               `json:"error,omitempty"`
	Finished  time.Time            `json:"finished,omitzero"`
}

// webauthnUser adapts a Postern user and its keys to webauthn.User. The
// user handle is the user id (random, not personal data).
type webauthnUser struct {
	u    *User
	keys []*WebAuthnKey
}

func (w webauthnUser) WebAuthnID() []byte          { return []byte(w.u.ID) }
func (w webauthnUser) WebAuthnName() string        { return w.u.Email }
func (w webauthnUser) WebAuthnDisplayName() string { return w.u.Email }
func (w webauthnUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, 0, len(w.keys))
	for _, k := range w.keys {
		out = append(out, k.Credential)
	}
	return out
}

// relyingParty is this controller as a WebAuthn relying party.
func (c *Controller) relyingParty() (*webauthn.WebAuthn, error) {
	if net.ParseIP(c.host) != nil {
		return nil, fmt.Errorf("%w: security keys are bound to a domain name, and the controller's public URL names the IP address %s (give it a DNS name)", ErrWebAuthnUnavailable, c.host)
	}
	u, err := url.Parse(c.issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: public URL: %v", ErrWebAuthnUnavailable, err)
	}
	rp, err := webauthn.New(&webauthn.Config{
		RPID:                  c.host,
		RPDisplayName:         "Postern",
		RPOrigins:             []string{u.Scheme + "://" + u.Host},
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementDiscouraged,
			UserVerification: protocol.VerificationPreferred,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: webauthnCeremonyTTL, TimeoutUVD: webauthnCeremonyTTL},
			Registration: webauthn.TimeoutConfig{Timeout: webauthnCeremonyTTL, TimeoutUVD: webauthnCeremonyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWebAuthnUnavailable, err)
	}
	return rp, nil
}

// recentStepUp reports whether s passed a second factor within
// mfaRemoveWindow (needed to add or remove a factor when one exists).
func (c *Controller) recentStepUp(s *Session) bool {
	return !s.MFAAt.IsZero() && c.now().Sub(s.MFAAt) <= mfaRemoveWindow
}

// hasFactor reports whether the user has a confirmed second factor.
func (m *Model) hasFactor(userID string) bool {
	e := m.access.mfa[userID]
	return len(m.access.webauthn[userID]) > 0 || (e != nil && e.Confirmed)
}

// beginWebAuthn starts a ceremony for session s of user u and returns it
// with its secret.
func (c *Controller) beginWebAuthn(ctx context.Context, s *Session, m *Model, u *User, register bool) (*webauthnCeremony, string, int, error) {
	rp, err := c.relyingParty()
	if err != nil {
		return nil, "", http.StatusNotImplemented, err
	}
	keys := m.access.webauthn[u.ID]
	wu := webauthnUser{u: u, keys: keys}
	now := c.now()
	cer := &webauthnCeremony{ID: newID("wac"), UserID: u.ID, SessionID: s.ID, DeviceID: s.DeviceID, State: controlapi.WebAuthnPending, Expires: now.Add(webauthnCeremonyTTL).UTC()}
	var opts any
	var sd *webauthn.SessionData
	if register {
		switch {
		case m.hasFactor(u.ID) && !c.recentStepUp(s):
			return nil, "", http.StatusForbidden, fmt.Errorf("adding a security key next to your second factor needs a step-up within %s: run postern mfa (or postern mfa --webauthn) first", mfaRemoveWindow)
		case len(keys) >= webauthnMaxKey:
			return nil, "", http.StatusConflict, fmt.Errorf("at most %d security keys per user", webauthnMaxKey)
		}
		cer.Kind = controlapi.WebAuthnRegister
		creds := webauthn.Credentials(wu.WebAuthnCredentials())
		cc, data, err := rp.BeginRegistration(wu, webauthn.WithExclusions(creds.CredentialDescriptors()))
		if err != nil {
			return nil, "", http.StatusInternalServerError, fmt.Errorf("begin WebAuthn registration: %w", err)
		}
		opts, sd = cc.Response, data
	} else {
		if len(keys) == 0 {
			return nil, "", http.StatusNotFound, ErrWebAuthnNoKey
		}
		if ok, until := c.mfaFails.allow(u.ID, now); !ok {
			return nil, "", http.StatusTooManyRequests, fmt.Errorf("%w: try again after %s", ErrMFAThrottled, until.UTC().Format(time.RFC3339))
		}
		cer.Kind = controlapi.WebAuthnLogin
		ca, data, err := rp.BeginLogin(wu)
		if err != nil {
			return nil, "", http.StatusInternalServerError, fmt.Errorf("begin WebAuthn assertion: %w", err)
		}
		opts, sd = ca.Response, data
	}
	cer.Data = *sd
	if cer.Options, err = json.Marshal(opts); err != nil {
		return nil, "", http.StatusInternalServerError, fmt.Errorf("encode WebAuthn options: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", http.StatusInternalServerError, err
	}
	secret := "wan_" + base64.RawURLEncoding.EncodeToString(b[:])
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		old, err := tx.List(KindWebAuthnCeremony)
		if err != nil {
			return err
		}
		for _, o := range old {
			var oc webauthnCeremony
			if json.Unmarshal(o.Data, &oc) != nil || now.Sub(oc.Expires) > webauthnKeep {
				if err := tx.Delete(KindWebAuthnCeremony, o.ID); err != nil {
					return err
				}
			}
		}
		o, err := toObject(KindWebAuthnCeremony, cer.ID, sha256Hex(secret), cer)
		if err != nil {
			return err
		}
		return tx.Put(o)
	})
	if err != nil {
		return nil, "", http.StatusInternalServerError, fmt.Errorf("store WebAuthn ceremony: %w", err)
	}
	return cer, secret, http.StatusOK, nil
}

// pendingCeremony returns the pending ceremony named by secret.
func (c *Controller) pendingCeremony(ctx context.Context, secret string) (*webauthnCeremony, int, error) {
	if secret == "" {
		return nil, http.StatusBadRequest, errors.New("secret is required (the part of the page's URL after #)")
	}
	var cer webauthnCeremony
	err := c.store.View(ctx, func(tx store.Tx) error {
		o, err := tx.GetByName(KindWebAuthnCeremony, sha256Hex(secret))
		if err != nil {
			return err
		}
		return json.Unmarshal(o.Data, &cer)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, http.StatusNotFound, ErrWebAuthnCeremony
	case err != nil:
		return nil, http.StatusInternalServerError, fmt.Errorf("load WebAuthn ceremony: %w", err)
	case cer.State != controlapi.WebAuthnPending:
		return nil, http.StatusConflict, fmt.Errorf("%w (it is %s)", ErrWebAuthnCeremony, cer.State)
	case !c.now().Before(cer.Expires):
		return nil, http.StatusGone, fmt.Errorf("%w: it expired at %s", ErrWebAuthnCeremony, cer.Expires.Format(time.RFC3339))
	}
	return &cer, http.StatusOK, nil
}

// webauthnError is the library's verdict in words: its details and, when
// it has them, the developer information (what did not match).
func webauthnError(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		msg := pe.Details
		if info := strings.TrimSpace(pe.DevInfo); info != "" && info != "<nil>" {
			msg += ": " + strings.ReplaceAll(info, "\n", "; ")
		}
		if msg = strings.TrimSuffix(msg, ": <nil>"); msg != "" {
			return msg
		}
	}
	return err.Error()
}

// finishWebAuthn verifies the browser's credential for the ceremony named
// by secret. It returns the finished ceremony, or an error with the HTTP
// status; on a verification failure the ceremony ends as failed, with an
// audit entry, and nothing else changes.
func (c *Controller) finishWebAuthn(ctx context.Context, req controlapi.WebAuthnFinish) (*webauthnCeremony, int, error) {
	cer, status, err := c.pendingCeremony(ctx, req.Secret)
	if err != nil {
		return nil, status, err
	}
	m := c.model()
	u, ok := m.Users[cer.UserID]
	s := m.SessionByID[cer.SessionID]
	now := c.now()
	if !ok || u.Disabled || s == nil || s.Revoked || !now.Before(s.ExpiresAt) {
		return nil, http.StatusUnauthorized, fmt.Errorf("%w: the session that started this ceremony has ended; sign in again", ErrUnauthenticated)
	}
	if cer.Kind == controlapi.WebAuthnLogin {
		if ok, until := c.mfaFails.allow(u.ID, now); !ok {
			return nil, http.StatusTooManyRequests, fmt.Errorf("%w: try again after %s", ErrMFAThrottled, until.UTC().Format(time.RFC3339))
		}
	}
	rp, err := c.relyingParty()
	if err != nil {
		return nil, http.StatusNotImplemented, err
	}
	wu := webauthnUser{u: u, keys: m.access.webauthn[u.ID]}
	var key *WebAuthnKey
	var verr error
	if len(req.Credential) == 0 {
		verr = errors.New("credential is required")
	} else if cer.Kind == controlapi.WebAuthnRegister {
		var parsed *protocol.ParsedCredentialCreationData
		if parsed, verr = protocol.ParseCredentialCreationResponseBytes(req.Credential); verr == nil {
			var cred *webauthn.Credential
			if cred, verr = rp.CreateCredential(wu, cer.Data, parsed); verr == nil {
				key = &WebAuthnKey{ID: newID("wak"), UserID: u.ID, Credential: *cred, Created: now.UTC(), LastUsed: now.UTC()}
			}
		}
	} else {
		var parsed *protocol.ParsedCredentialAssertionData
		if parsed, verr = protocol.ParseCredentialRequestResponseBytes(req.Credential); verr == nil {
			var cred *webauthn.Credential
			if cred, verr = rp.ValidateLogin(wu, cer.Data, parsed); verr == nil {
				if cred.Authenticator.CloneWarning {
					verr = errors.New("the key's signature counter went backwards: it may have been cloned")
				} else {
					for _, k := range wu.keys {
						if string(k.Credential.ID) == string(cred.ID) {
							nk := *k
							nk.Credential, nk.LastUsed = *cred, now.UTC()
							key = &nk
						}
					}
					if key == nil {
						verr = errors.New("the credential is not one of this user's keys")
					}
				}
			}
		}
	}
	if verr != nil {
		msg := fmt.Sprintf("%v: %s", ErrWebAuthnVerify, webauthnError(verr))
		err := c.endCeremony(ctx, cer, u, s, nil, msg)
		switch {
		case errors.Is(err, ErrWebAuthnCeremony):
			return nil, http.StatusConflict, err // a concurrent finish ended it
		case err != nil:
			return nil, http.StatusInternalServerError, err
		case cer.Kind == controlapi.WebAuthnLogin:
			c.mfaFails.fail(u.ID, now)
		}
		return nil, http.StatusForbidden, fmt.Errorf("%w: %s", ErrWebAuthnVerify, webauthnError(verr))
	}
	if err := c.endCeremony(ctx, cer, u, s, key, ""); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, http.StatusConflict, errors.New("this security key is already enrolled")
		}
		if errors.Is(err, ErrWebAuthnCeremony) {
			return nil, http.StatusConflict, err
		}
		return nil, http.StatusInternalServerError, err
	}
	if cer.Kind == controlapi.WebAuthnLogin {
		c.mfaFails.reset(u.ID)
	}
	return cer, http.StatusOK, nil
}

// endCeremony records a ceremony's end in one transaction: failed (msg set:
// the ceremony and an mfa-failed audit entry only), or done: the key stored
// (new, or its counter and last use updated), the session stepped up, and
// the audit entries. A ceremony that is no longer pending in the store (a
// concurrent finish) is ErrWebAuthnCeremony and changes nothing.
func (c *Controller) endCeremony(ctx context.Context, cer *webauthnCeremony, u *User, s *Session, key *WebAuthnKey, msg string) error {
	now := c.now().UTC()
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.Get(KindWebAuthnCeremony, cer.ID)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrWebAuthnCeremony, err)
		}
		var cur webauthnCeremony
		if err := json.Unmarshal(o.Data, &cur); err != nil || cur.State != controlapi.WebAuthnPending {
			return ErrWebAuthnCeremony
		}
		cur.Finished = now
		audit := func(action, id string) error {
			return tx.Audit(store.AuditEntry{Actor: u.Email, Action: action, Kind: KindWebAuthn, ObjectID: id, Name: u.Email, Device: s.DeviceID})
		}
		if msg != "" {
			cur.State, cur.Error = controlapi.WebAuthnFailed, msg
			if err := putCeremony(tx, o.Name, &cur); err != nil {
				return err
			}
			return audit("mfa-failed", cur.ID)
		}
		cur.State = controlapi.WebAuthnDone
		if err := putCeremony(tx, o.Name, &cur); err != nil {
			return err
		}
		if cur.Kind == controlapi.WebAuthnLogin {
			// The key may have been removed since the model was read.
			if _, err := tx.Get(KindWebAuthn, key.ID); err != nil {
				return fmt.Errorf("%w: the security key was removed meanwhile", ErrWebAuthnCeremony)
			}
		}
		ko, err := toObject(KindWebAuthn, key.ID, base64.RawURLEncoding.EncodeToString(key.Credential.ID), key)
		if err != nil {
			return err
		}
		if err := tx.Put(ko); err != nil {
			return err
		}
		if err := stampSessionMFA(tx, s.ID, now, amrHWK); err != nil {
			return err
		}
		if cur.Kind == controlapi.WebAuthnRegister {
			if err := audit("mfa-enroll", key.ID); err != nil {
				return err
			}
			return audit("mfa-confirm", key.ID)
		}
		return audit("mfa-verify", key.ID)
	})
	if err == nil {
		if msg != "" {
			cer.State, cer.Error = controlapi.WebAuthnFailed, msg
		} else {
			cer.State = controlapi.WebAuthnDone
		}
	}
	return err
}

func putCeremony(tx store.Tx, name string, cer *webauthnCeremony) error {
	o, err := toObject(KindWebAuthnCeremony, cer.ID, name, cer)
	if err != nil {
		return err
	}
	return tx.Put(o)
}
