package controller

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// TOTP second factor (RFC 6238, 30 s steps, 6 digits, SHA-1 as every
// authenticator app expects). Codes from one step before or after are
// accepted for clock drift; a code's step must be newer than the last
// accepted one, so a code is never accepted twice. Failures are limited per
// user: mfaMaxFailures within mfaFailWindow, then nothing is checked until
// the window has passed.
const (
	totpPeriod     = 30
	mfaMaxFailures = 5
	mfaFailWindow  = 15 * time.Minute
	mfaSealLabel   = "postern mfa secrets v1"
	// mfaRemoveWindow: removing the second factor needs a step-up this recent.
	mfaRemoveWindow = 10 * time.Minute
)

// Errors of the second factor (their statuses are the api's).
var (
	ErrMFACode      = api.ErrMFACode
	ErrMFAThrottled = api.ErrMFAThrottled
	ErrMFANotSetUp  = api.ErrMFANotSetUp
)

// mfaThrottle counts failed codes per user: in memory on one controller,
// in the shared database (store.Throttle, key "mfa:<user>") when replicas
// serve the deployment, so that spreading guesses over replicas gains
// nothing. Shared, the window is fixed: mfaMaxFailures failures lock the
// user's checks until mfaFailWindow after the first of them.
type mfaThrottle struct {
	mu     sync.Mutex
	fails  map[string][]time.Time
	shared store.Throttle
	log    *slog.Logger // with shared
}

// allow reports whether user may try a code at now, and until when not.
// When the shared counts cannot be read it refuses for a second.
func (t *mfaThrottle) allow(user string, now time.Time) (bool, time.Time) {
	if t.shared != nil {
		es, err := t.shared.ThrottleView(context.Background(), []string{"mfa:" + user}, now.Add(-mfaFailWindow))
		if err != nil {
			return false, now.Add(time.Second)
		}
		if e, ok := es["mfa:"+user]; ok && e.Fails >= mfaMaxFailures && e.Until.After(now) {
			return false, e.Until
		}
		return true, time.Time{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	recent := t.fails[user][:0]
	for _, at := range t.fails[user] {
		if now.Sub(at) < mfaFailWindow {
			recent = append(recent, at)
		}
	}
	if t.fails == nil {
		t.fails = map[string][]time.Time{}
	}
	t.fails[user] = recent
	if len(recent) >= mfaMaxFailures {
		return false, recent[0].Add(mfaFailWindow)
	}
	return true, time.Time{}
}

func (t *mfaThrottle) fail(user string, now time.Time) {
	if t.shared != nil {
		k := "mfa:" + user
		err := t.shared.ThrottleUpdate(context.Background(), []string{k}, now.Add(-mfaFailWindow), func(es map[string]store.ThrottleEntry) {
			e, ok := es[k]
			if !ok || !e.Until.After(now) {
				e = store.ThrottleEntry{Until: now.Add(mfaFailWindow)}
			}
			e.Fails++
			e.Last = now
			es[k] = e
		})
		if err != nil {
			t.log.Error("second-factor throttle: record a failure", "user", user, "err", err)
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fails == nil {
		t.fails = map[string][]time.Time{}
	}
	t.fails[user] = append(t.fails[user], now)
}

func (t *mfaThrottle) reset(user string) {
	if t.shared != nil {
		k := "mfa:" + user
		if err := t.shared.ThrottleUpdate(context.Background(), []string{k}, time.Time{}, func(es map[string]store.ThrottleEntry) { delete(es, k) }); err != nil {
			t.log.Error("second-factor throttle: clear", "user", user, "err", err)
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fails, user)
}

func (c *Controller) mfaAEAD() (cipher.AEAD, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("derive MFA sealing key: %w", err)
	}
	key, err := hkdf.Key(sha256.New, der, nil, mfaSealLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive MFA sealing key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (c *Controller) sealMFA(userID, secret string) (nonce, sealed []byte, err error) {
	aead, err := c.mfaAEAD()
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, aead.Seal(nil, nonce, []byte(secret), []byte(userID)), nil
}

func (c *Controller) unsealMFA(e *MFAEnrollment) (string, error) {
	aead, err := c.mfaAEAD()
	if err != nil {
		return "", err
	}
	pt, err := aead.Open(nil, e.Nonce, e.Sealed, []byte(e.UserID))
	if err != nil {
		return "", fmt.Errorf("unseal MFA secret of %s: %w", e.UserID, err)
	}
	return string(pt), nil
}

// matchTOTP returns the time step code belongs to (now, or one step either
// side), or false.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, false
	}
	step := now.Unix() / totpPeriod
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
	for _, s := range []int64{step - 1, step, step + 1} {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*totpPeriod, 0), opts)
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return s, true
		}
	}
	return 0, false
}

func (c *Controller) mfaStatus(m *Model, s *Session, userID string) controlapi.MFAStatus {
	st := controlapi.MFAStatus{LastAt: s.MFAAt, SecurityKeys: len(m.access.webauthn[userID])}
	if e := m.access.mfa[userID]; e != nil {
		st.Enrolled, st.Pending, st.TOTP = true, !e.Confirmed, e.Confirmed
	}
	if st.SecurityKeys > 0 {
		st.Enrolled, st.Pending = true, false
	}
	return st
}

// Person reports whether the session's account is a user (api.ClientSession).
func (cs *clientSession) Person() bool {
	_, ok := cs.m.Users[cs.s.PrincipalID]
	return ok
}

// user is the session's user; the api asks Person first.
func (cs *clientSession) user() (*User, error) {
	u, ok := cs.m.Users[cs.s.PrincipalID]
	if !ok {
		return nil, &api.Forbidden{Msg: "a second factor is for people; service accounts have none"}
	}
	return u, nil
}

// MFAStatus is the user's second factor and the session's last step-up
// (api.MFA).
func (cs *clientSession) MFAStatus() controlapi.MFAStatus {
	return cs.c.mfaStatus(cs.m, cs.s, cs.s.PrincipalID)
}

// EnrollTOTP makes a new TOTP secret for the user. It replaces an
// unconfirmed one; a confirmed one must be removed first (api.MFA).
func (cs *clientSession) EnrollTOTP(ctx context.Context) (controlapi.MFAEnrollResponse, error) {
	c, s, m := cs.c, cs.s, cs.m
	u, err := cs.user()
	if err != nil {
		return controlapi.MFAEnrollResponse{}, err
	}
	if e := m.access.mfa[u.ID]; e != nil && e.Confirmed {
		return controlapi.MFAEnrollResponse{}, api.ErrMFAEnrolled
	}
	if len(m.access.webauthn[u.ID]) > 0 && !c.recentStepUp(s) {
		return controlapi.MFAEnrollResponse{}, &api.Forbidden{Msg: fmt.Sprintf("adding a TOTP app next to your security key needs a step-up within %s: run postern mfa --webauthn first", mfaRemoveWindow)}
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Postern", AccountName: u.Email, Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return controlapi.MFAEnrollResponse{}, fmt.Errorf("generate TOTP secret: %w", err)
	}
	nonce, sealed, err := c.sealMFA(u.ID, key.Secret())
	if err != nil {
		return controlapi.MFAEnrollResponse{}, err
	}
	rec := &MFAEnrollment{ID: newID("mfa"), UserID: u.ID, Nonce: nonce, Sealed: sealed, Created: c.now().UTC()}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		if old, err := tx.GetByName(KindMFA, u.ID); err == nil {
			if err := tx.Delete(KindMFA, old.ID); err != nil {
				return err
			}
		}
		o, err := toObject(KindMFA, rec.ID, u.ID, rec)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: u.Email, Action: "mfa-enroll", Kind: KindMFA, ObjectID: rec.ID, Name: u.Email, Device: s.DeviceID})
	})
	if err != nil {
		return controlapi.MFAEnrollResponse{}, fmt.Errorf("store MFA enrollment: %w", err)
	}
	return controlapi.MFAEnrollResponse{URI: key.URL(), Secret: key.Secret()}, nil
}

// verifyMFA checks code for the session's user and, when right, confirms
// the enrollment and records the step-up on the session.
func (c *Controller) verifyMFA(ctx context.Context, s *Session, u *User, code string) error {
	now := c.now()
	if ok, until := c.mfaFails.allow(u.ID, now); !ok {
		return fmt.Errorf("%w: try again after %s", ErrMFAThrottled, until.UTC().Format(time.RFC3339))
	}
	var failed bool
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		failed = false
		o, err := tx.GetByName(KindMFA, u.ID)
		if errors.Is(err, store.ErrNotFound) {
			return ErrMFANotSetUp
		}
		if err != nil {
			return err
		}
		var e MFAEnrollment
		if err := json.Unmarshal(o.Data, &e); err != nil {
			return fmt.Errorf("decode MFA enrollment: %w", err)
		}
		secret, err := c.unsealMFA(&e)
		if err != nil {
			return err
		}
		step, ok := matchTOTP(secret, code, now)
		if !ok || step <= e.LastStep {
			failed = true
			return tx.Audit(store.AuditEntry{Actor: u.Email, Action: "mfa-failed", Kind: KindMFA, ObjectID: e.ID, Name: u.Email, Device: s.DeviceID})
		}
		action := "mfa-verify"
		if !e.Confirmed {
			action = "mfa-confirm"
		}
		e.LastStep, e.Confirmed = step, true
		no, err := toObject(KindMFA, e.ID, u.ID, &e)
		if err != nil {
			return err
		}
		if err := tx.Put(no); err != nil {
			return err
		}
		if err := stampSessionMFA(tx, s.ID, now.UTC(), amrOTP); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: u.Email, Action: action, Kind: KindMFA, ObjectID: e.ID, Name: u.Email, Device: s.DeviceID})
	})
	if err != nil {
		return err
	}
	if failed {
		c.mfaFails.fail(u.ID, now)
		return ErrMFACode
	}
	c.mfaFails.reset(u.ID)
	return nil
}

// stampSessionMFA records in tx that session id passed a second factor at
// at, by method (an amr value: amrOTP, amrHWK).
func stampSessionMFA(tx store.Tx, id string, at time.Time, method string) error {
	so, err := tx.Get(KindSession, id)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(so.Data, &sess); err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	sess.MFAAt, sess.MFAMethod = at, method
	sn, err := toObject(KindSession, sess.ID, so.Name, &sess)
	if err != nil {
		return err
	}
	return tx.Put(sn)
}

// VerifyMFA checks code for the user, confirms a pending enrollment and
// records the step-up; it answers the new status (api.MFA).
func (cs *clientSession) VerifyMFA(ctx context.Context, code string) (controlapi.MFAStatus, error) {
	c, s := cs.c, cs.s
	u, err := cs.user()
	if err != nil {
		return controlapi.MFAStatus{}, err
	}
	if err := c.verifyMFA(ctx, s, u, code); err != nil {
		return controlapi.MFAStatus{}, err
	}
	m := c.model()
	if ns := m.SessionByID[s.ID]; ns != nil {
		s = ns
	}
	return c.mfaStatus(m, s, u.ID), nil
}

// RemoveMFA removes the user's enrollment. A confirmed one needs a code
// (checked like any step-up) or a step-up within mfaRemoveWindow (api.MFA).
func (cs *clientSession) RemoveMFA(ctx context.Context, code string) error {
	c, s, m := cs.c, cs.s, cs.m
	u, err := cs.user()
	if err != nil {
		return err
	}
	e := m.access.mfa[u.ID]
	if e == nil {
		return ErrMFANotSetUp
	}
	if e.Confirmed && (s.MFAAt.IsZero() || c.now().Sub(s.MFAAt) > mfaRemoveWindow) {
		if code == "" {
			return &api.Forbidden{Msg: "a current code is required to remove the second factor"}
		}
		if err := c.verifyMFA(ctx, s, u, code); err != nil {
			return err
		}
	}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		if err := tx.Delete(KindMFA, e.ID); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: u.Email, Action: "mfa-remove", Kind: KindMFA, ObjectID: e.ID, Name: u.Email, Device: s.DeviceID})
	})
	if err != nil {
		return fmt.Errorf("remove MFA enrollment: %w", err)
	}
	return nil
}
