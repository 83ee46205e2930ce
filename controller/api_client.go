package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
)

// sessionForToken finds the live session of a session token.
func (c *Controller) sessionForToken(ctx context.Context, t string) (*Session, *Model, error) {
	if t == "" {
		return nil, nil, fmt.Errorf("%w: session token required (Authorization: Bearer ...)", ErrUnauthenticated)
	}
	s, m, err := c.session(t)
	if err == nil {
		return s, m, nil
	}
	if _, shared := c.store.(store.Shared); !shared {
		return nil, nil, err
	}
	// With a shared store the session may have been made on another
	// replica a moment ago (or that replica just died and the client moved
	// here). The watch loop may have brought the model forward since the
	// lookup above; if it has not, catch up with the store first. Either
	// way, look again before calling the session unknown.
	if _, known := c.model().Sessions[sha256Hex(t)]; !known {
		if rerr := c.reload(ctx); rerr != nil {
			c.log.Warn("catch up with the shared store for a session", "err", rerr)
			return nil, nil, err
		}
	}
	return c.session(t)
}

func (c *Controller) session(token string) (*Session, *Model, error) {
	m := c.model()
	s, ok := m.Sessions[sha256Hex(token)]
	if !ok {
		return nil, nil, fmt.Errorf("%w: unknown, expired or revoked session; sign in again", ErrUnauthenticated)
	}
	now := c.now()
	if now.After(s.ExpiresAt) {
		return nil, nil, fmt.Errorf("%w: session expired at %s; sign in again", ErrUnauthenticated, s.ExpiresAt.Format(time.RFC3339))
	}
	if p := m.credentialProblem(s, now); p != "" {
		return nil, nil, fmt.Errorf("%w: session ended (%s); sign in again", ErrUnauthenticated, p)
	}
	if d, ok := m.Devices[s.DeviceID]; !ok || d.Revoked {
		return nil, nil, fmt.Errorf("%w: this device was revoked", ErrUnauthenticated)
	}
	if _, ok := m.principal(s.PrincipalID); !ok {
		return nil, nil, fmt.Errorf("%w: the account no longer exists or is disabled", ErrUnauthenticated)
	}
	return s, m, nil
}

// Login signs a device in from ip (api.Clients); on failure it returns the
// status to answer with.
func (c *Controller) Login(ctx context.Context, ip string, req controlapi.LoginRequest) (*controlapi.LoginResponse, int, error) {
	resp, status, err := c.login(ctx, ip, req)
	if err != nil && status == http.StatusTooManyRequests {
		c.met.signIn(loginMethod(req), "throttled")
	}
	return resp, status, err
}

// clientSession is a live session of a device, for the client API.
type clientSession struct {
	c *Controller
	s *Session
	m *Model
}

// ClientSession is the live session of a session token (api.Clients); its
// errors wrap ErrUnauthenticated.
func (c *Controller) ClientSession(ctx context.Context, token string) (api.ClientSession, error) {
	s, m, err := c.sessionForToken(ctx, token)
	if err != nil {
		return nil, err
	}
	return &clientSession{c: c, s: s, m: m}, nil
}

// Logout ends the session (api.ClientSession).
func (cs *clientSession) Logout(ctx context.Context) error {
	return cs.c.revokeSession(ctx, "principal:"+cs.s.PrincipalID, cs.s.ID)
}

// TURNCredentials are TURN credentials bound to the device
// (api.ClientSession).
func (cs *clientSession) TURNCredentials() (controlapi.TURNCredentials, error) {
	if !cs.m.mayUseAnyConnector(cs.s.PrincipalID) {
		return controlapi.TURNCredentials{}, api.ErrNothingToRelay
	}
	return cs.c.deviceTURNCredentials(cs.s.PrincipalID, cs.s.DeviceID), nil
}

// ConnectionToken issues a Connection Token for connector (api.ClientSession).
func (cs *clientSession) ConnectionToken(connector string) (*controlapi.TokenResponse, error) {
	return cs.c.issueToken(cs.m, cs.s, connector)
}

type throttledError struct {
	wait       time.Duration
	newDevices bool
}

func (e *throttledError) Error() string {
	if e.newDevices {
		return fmt.Sprintf("%v: after many failed sign-ins this account accepts sign-ins only from devices already used with it; use such a device or wait %s", ErrThrottled, e.wait.Round(time.Second))
	}
	return fmt.Sprintf("%v: wait %s before trying again", ErrThrottled, e.wait.Round(time.Second))
}
func (e *throttledError) Unwrap() error { return ErrThrottled }

// RetryAfter is how long to wait before signing in again.
func (e *throttledError) RetryAfter() time.Duration { return e.wait }

// loginMethod names the credential a LoginRequest carries (metrics label).
func loginMethod(req controlapi.LoginRequest) string {
	switch {
	case req.IDToken != "":
		return "id_token"
	case req.ServiceKey != nil:
		return "service_key"
	case req.Email != "":
		return "password"
	}
	return "none"
}

// signIn is who a sign-in authenticated and with what.
type signIn struct {
	PrincipalID, PrincipalKind string
	Method                     string // password, service_key, oidc
	Credential                 string // Session.Credential
}

// knownDevice reports whether the device key with thumbprint jkt is
// registered to principal pid and not revoked.
func (m *Model) knownDevice(pid, jkt string) bool {
	d := m.DeviceByKey[pid+"/"+jkt]
	return d != nil && !d.Revoked
}

// login signs a device in and returns its session.
func (c *Controller) login(ctx context.Context, ip string, req controlapi.LoginRequest) (*controlapi.LoginResponse, int, error) {
	raw, err := base64.StdEncoding.DecodeString(req.DevicePublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, http.StatusBadRequest, errors.New("device_public_key: base64 of a 32-byte Ed25519 public key is required")
	}
	if len(req.DeviceName) > 128 || len(req.OS) > 64 {
		return nil, http.StatusBadRequest, errors.New("device_name or os: too long")
	}
	ctx = api.WithRequestIP(ctx, ip)
	jkt := pki.KeyThumbprint(ed25519.PublicKey(raw))
	m := c.model()
	var who signIn
	var expires time.Time
	switch {
	case req.IDToken != "":
		if c.cfg.VerifyIDToken == nil {
			return nil, http.StatusNotImplemented, errors.New("id_token: single sign-on (OIDC) is not configured on this controller")
		}
		att := loginAttempt{IP: ip, Device: jkt}
		if v := c.logins.check(ctx, att); v.wait > 0 {
			return nil, http.StatusTooManyRequests, &throttledError{wait: v.wait}
		}
		id, err := c.cfg.VerifyIDToken(ctx, req.IDToken)
		if err != nil {
			c.logins.fail(ctx, att)
			c.auditFailedSignIn(ctx, "oidc", KindUser, "", "", jkt, "id_token", err.Error())
			return nil, http.StatusUnauthorized, fmt.Errorf("id_token: %w", err)
		}
		resp, status, err := c.signInExternal(ctx, *id, req)
		if err != nil {
			return nil, status, err
		}
		return resp, 0, nil
	case req.ServiceKey != nil:
		k := req.ServiceKey
		sa, ok := m.ServiceAccounts[k.AccountID]
		att := loginAttempt{Account: "sa:" + k.AccountID, IP: ip, Device: jkt, Known: ok && m.knownDevice(sa.ID, jkt)}
		if v := c.logins.check(ctx, att); v.wait > 0 {
			return nil, http.StatusTooManyRequests, &throttledError{wait: v.wait, newDevices: v.newDevices}
		}
		var key *ServiceKeyRec
		if ok && k.Type == serviceKeyType {
			for i, rec := range sa.Keys {
				if rec.KeyID == k.KeyID && subtle.ConstantTimeCompare([]byte(rec.SecretHash), []byte(sha256Hex(k.Secret))) == 1 &&
					(rec.ExpiresAt.IsZero() || c.now().Before(rec.ExpiresAt)) {
					key = &sa.Keys[i]
				}
			}
		}
		if key == nil {
			c.logins.fail(ctx, att)
			name := k.AccountID
			if ok {
				name = sa.Name
			}
			c.auditFailedSignIn(ctx, "service_account:"+name, KindServiceAccount, k.AccountID, name, jkt, "service_key", "unknown, revoked or expired key "+k.KeyID)
			return nil, http.StatusUnauthorized, errors.New("service_key: unknown, revoked or expired service account key")
		}
		c.logins.success(ctx, att)
		who = signIn{sa.ID, PrincipalServiceAccount, "service_key", serviceKeyCredential(key.KeyID)}
		expires = key.ExpiresAt
	case req.Email != "":
		email := strings.ToLower(strings.TrimSpace(req.Email))
		u, ok := m.UserByEmail[email]
		att := loginAttempt{Account: "user:" + email, IP: ip, Device: jkt, Known: ok && m.knownDevice(u.ID, jkt)}
		if v := c.logins.check(ctx, att); v.wait > 0 {
			c.log.Warn("sign-in throttled", "email", email, "ip", ip, "wait", v.wait, "known_devices_only", v.newDevices)
			return nil, http.StatusTooManyRequests, &throttledError{wait: v.wait, newDevices: v.newDevices}
		}
		hash := dummyHash()
		if ok && u.PasswordHash != "" {
			hash = u.PasswordHash
		}
		good := verifyPassword(hash, req.Password)
		if !ok || u.PasswordHash == "" || u.Disabled || !good {
			c.logins.fail(ctx, att)
			c.log.Warn("failed sign-in", "email", email, "ip", ip, "device", jkt)
			uid := ""
			if ok {
				uid = u.ID
			}
			c.auditFailedSignIn(ctx, "user:"+email, KindUser, uid, email, jkt, "password", "wrong email or password")
			return nil, http.StatusUnauthorized, errors.New("wrong email or password")
		}
		c.logins.success(ctx, att)
		who = signIn{u.ID, PrincipalUser, "password", passwordCredential(u.PasswordHash)}
	default:
		return nil, http.StatusBadRequest, errors.New("one credential is required: email and password, service_key or id_token")
	}
	resp, status, err := c.createSession(ctx, who, req, nil, expires)
	if err != nil {
		return nil, status, err
	}
	return resp, 0, nil
}

// auditFailedSignIn records a refused sign-in (never the secret tried).
// The device is the thumbprint of the key presented, or its id when the
// key is registered to the account.
func (c *Controller) auditFailedSignIn(ctx context.Context, actor, kind, id, name, jkt, method, reason string) {
	device := ""
	if jkt != "" {
		device = "jkt:" + jkt
		if d := c.model().DeviceByKey[id+"/"+jkt]; id != "" && d != nil {
			device = d.ID
		}
	}
	c.met.signIn(method, "failed")
	after, _ := json.Marshal(map[string]string{"method": method, "reason": reason})
	_, _, err := c.store.Update(context.WithoutCancel(ctx), func(tx store.Tx) error {
		return tx.Audit(store.AuditEntry{At: c.now(), Actor: actor, Action: "sign-in-failed", Kind: kind, ObjectID: id, Name: name,
			IP: api.RequestIP(ctx), Device: device, After: after})
	})
	if err != nil {
		c.log.Error("audit failed sign-in", "err", err)
	}
}

// deviceKeyName is a device's unique store name: one device per principal
// and key.
func deviceKeyName(pid string, key ed25519.PublicKey) string {
	return pid + "/" + pki.KeyThumbprint(key)
}

// createSession registers (or reuses) the device with req's key for the
// principal who signed in and makes a session for it, ending no later than
// expires (when set: the credential's expiry) and recording the sign-in and
// any new device in the audit log with the request's IP.
func (c *Controller) createSession(ctx context.Context, who signIn, req controlapi.LoginRequest, external json.RawMessage, expires time.Time) (*controlapi.LoginResponse, int, error) {
	pid, pkind, method := who.PrincipalID, who.PrincipalKind, who.Method
	raw, err := base64.StdEncoding.DecodeString(req.DevicePublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, http.StatusBadRequest, errors.New("device_public_key: base64 of a 32-byte Ed25519 public key is required")
	}
	devKey := ed25519.PublicKey(raw)
	token := "pss_" + api.RandomHex(32)
	now := c.now().UTC()
	pr, _ := c.model().principal(pid)
	ip := api.RequestIP(ctx)
	if expires.IsZero() || expires.After(now.Add(c.cfg.SessionTTL)) {
		expires = now.Add(c.cfg.SessionTTL)
	}
	sess := Session{ID: newID(idPrefix(KindSession)), TokenHash: sha256Hex(token), PrincipalID: pid, PrincipalKind: pkind,
		Method: method, Credential: who.Credential, Created: now, ExpiresAt: expires, External: external}
	status := http.StatusInternalServerError
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		var dev *Device
		if o, err := tx.GetByName(KindDevice, deviceKeyName(pid, devKey)); err == nil {
			dev = new(Device)
			if err := json.Unmarshal(o.Data, dev); err != nil {
				return fmt.Errorf("decode device %s: %w", o.ID, err)
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if dev != nil && dev.Revoked {
			status = http.StatusForbidden
			return errors.New("this device key was revoked by an administrator; create a new device key")
		}
		created := dev == nil
		if created {
			dev = &Device{ID: newID(idPrefix(KindDevice)), PrincipalID: pid, PrincipalKind: pkind, PublicKey: req.DevicePublicKey,
				Thumbprint: pki.KeyThumbprint(devKey), Created: now}
		}
		dev.Name, dev.OS = req.DeviceName, req.OS
		o, err := toObject(KindDevice, dev.ID, deviceKeyName(pid, devKey), dev)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		actor := pkind + ":" + pr.Name
		if created {
			if err := tx.Audit(store.AuditEntry{At: now, Actor: actor, Action: "create", Kind: KindDevice, ObjectID: dev.ID, Name: o.Name,
				After: redact(KindDevice, o.Data), IP: ip, Device: dev.ID}); err != nil {
				return err
			}
		}
		sess.DeviceID = dev.ID
		if o, err = toObject(KindSession, sess.ID, sess.ID, sess); err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		after, _ := json.Marshal(map[string]any{"method": method, "principal": pid, "expires_at": sess.ExpiresAt})
		return tx.Audit(store.AuditEntry{At: now, Actor: actor, Action: "sign-in", Kind: KindSession, ObjectID: sess.ID, Name: pr.Name,
			After: after, IP: ip, Device: dev.ID})
	})
	if err != nil {
		return nil, status, err
	}
	if err := c.reload(ctx); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	pr, _ = c.model().principal(pid)
	c.met.signIn(method, "ok")
	c.log.Info("signed in", "principal", pr.Name, "device", sess.DeviceID, "method", method, "ip", ip)
	return &controlapi.LoginResponse{SessionToken: token, ExpiresAt: sess.ExpiresAt, DeviceID: sess.DeviceID, Principal: pr}, 0, nil
}

// revokeSession ends one session.
func (c *Controller) revokeSession(ctx context.Context, actor, id string) error {
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.Get(KindSession, id)
		if err != nil {
			return err
		}
		err = updateRecord(tx, KindSession, id, func(v *Session) bool {
			if v.Revoked {
				return false
			}
			v.Revoked, v.RevokedAt = true, c.now().UTC()
			return true
		})
		if err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: actor, Action: "revoke", Kind: KindSession, ObjectID: id, Name: o.Name})
	})
	if err != nil {
		return err
	}
	return c.reload(ctx)
}

// revokeDevice ends a device's access everywhere: it and its sessions are
// revoked, and connectors close its connections.
func (c *Controller) revokeDevice(ctx context.Context, actor, id string) error {
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		now := c.now().UTC()
		before, err := tx.Get(KindDevice, id)
		if err != nil {
			return err
		}
		if err := updateRecord(tx, KindDevice, id, func(v *Device) bool {
			if v.Revoked {
				return false
			}
			v.Revoked, v.RevokedAt = true, now
			return true
		}); err != nil {
			return err
		}
		var sessions []Session
		if err := listInto(tx, KindSession, &sessions); err != nil {
			return err
		}
		for _, s := range sessions {
			if s.DeviceID == id && !s.Revoked {
				if err := updateRecord(tx, KindSession, s.ID, func(v *Session) bool { v.Revoked, v.RevokedAt = true, now; return true }); err != nil {
					return err
				}
			}
		}
		return tx.Audit(store.AuditEntry{Actor: actor, Action: "revoke", Kind: KindDevice, ObjectID: id, Name: before.Name, Before: before.Data})
	})
	if err != nil {
		return err
	}
	return c.reload(ctx)
}

// IssueConnectionToken issues a Connection Token for the device signed in with
// sessionToken, for connector connectorID (an id or a name).
func (c *Controller) IssueConnectionToken(sessionToken, connectorID string) (*controlapi.TokenResponse, error) {
	s, m, err := c.session(sessionToken)
	if err != nil {
		return nil, err
	}
	return c.issueToken(m, s, connectorID)
}

var errNoDigest = api.ErrNoDigest

func (c *Controller) issueToken(m *Model, s *Session, connectorID string) (*controlapi.TokenResponse, error) {
	cn, ok := m.Connectors[connectorID]
	if !ok {
		if cn, ok = m.ConnectorByName[connectorID]; !ok {
			return nil, fmt.Errorf("%w: connector %q", ErrUnknownComponent, connectorID)
		}
	}
	if len(cn.CertSHA256) == 0 {
		return nil, fmt.Errorf("connector %s: %w", cn.Name, errNoDigest)
	}
	if !m.mayUseConnector(s.PrincipalID, cn) {
		return nil, fmt.Errorf("%w: no resource served by connector %s is allowed for this account", ErrNotAllowed, cn.Name)
	}
	dev := m.Devices[s.DeviceID]
	pr, _ := m.principal(s.PrincipalID)
	exp := time.Now().Add(c.cfg.TokenTTL)
	claims := ctoken.Claims{
		PrincipalKind: pr.Kind, PrincipalName: pr.Name, Groups: pr.Groups, Device: dev.ID,
		ConnectorCertSHA256: cn.CertSHA256[0], Cnf: ctoken.Confirmation{JKT: dev.Thumbprint},
		RegisteredClaims: jwt.RegisteredClaims{Subject: pr.ID, Audience: jwt.ClaimStrings{cn.ID}, ExpiresAt: jwt.NewNumericDate(exp)},
	}
	claims.MFAAt, claims.AMR, claims.Posture, claims.Grants = m.accessClaims(s, cn.Network, c.now())
	tok, err := c.signer.Load().Issue(claims)
	if err != nil {
		return nil, fmt.Errorf("sign connection token: %w", err)
	}
	c.met.issued("connection_token")
	return &controlapi.TokenResponse{Token: tok, ExpiresAt: exp.Truncate(time.Second).UTC(), CertSHA256: cn.CertSHA256[0]}, nil
}

func (c *Controller) connectorLoad(id string) controlapi.ConnectorLoad {
	c.rtMu.Lock()
	defer c.rtMu.Unlock()
	return c.connLoad[id]
}
