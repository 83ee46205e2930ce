// Signing in and out: Authenticate trades one credential for a session at
// the controller, Begin makes it the current one, Logout ends it.

package session

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// Grant is a session the controller granted that is not current yet: Begin
// makes it current, Discard drops it.
type Grant struct {
	info *Info
	cc   *controlClient
}

// Info is the session granted.
func (g *Grant) Info() Info { return *g.info }

// Discard releases a grant that will not be used.
func (g *Grant) Discard() { g.cc.close() }

// Authenticate signs the device in at the controller with the one
// credential of req and returns the granted session; nothing of the current
// session changes. A request without a controller gets the preset or
// remembered one. When an administrator revoked this device's key, the key
// is replaced (signed out only) and a password or service-key sign-in is
// tried again with the new one.
func (m *Manager) Authenticate(ctx context.Context, req localapi.LoginRequest) (*Grant, error) {
	if err := m.FillController(&req.ControllerURL, &req.CAPEM); err != nil {
		return nil, err
	}
	lr := controlapi.LoginRequest{
		Email: req.Email, Password: req.Password, IDToken: req.IDToken,
		DevicePublicKey: m.publicKey(),
		DeviceName:      m.deviceName(),
		OS:              runtime.GOOS,
	}
	n := 0
	if req.Email != "" || req.Password != "" {
		n++
		if req.Email == "" || req.Password == "" {
			return nil, fmt.Errorf("%w: both email and password are required", ErrBadRequest)
		}
	}
	if req.ServiceKey != "" {
		n++
		var sk controlapi.ServiceKey
		if err := json.Unmarshal([]byte(req.ServiceKey), &sk); err != nil {
			return nil, fmt.Errorf("%w: service key file is not valid JSON: %v", ErrBadRequest, err)
		}
		if sk.AccountID == "" || sk.Secret == "" {
			return nil, fmt.Errorf("%w: service key file lacks account_id or secret", ErrBadRequest)
		}
		lr.ServiceKey = &sk
	}
	if req.IDToken != "" {
		n++
	}
	sso := req.OIDC != nil || req.OIDCDeviceFlow != ""
	if sso {
		n++
	}
	if n != 1 {
		return nil, fmt.Errorf("%w: give exactly one credential (user and password, a service key, or a single sign-on grant)", ErrBadRequest)
	}
	cc, err := newControlClient(req.ControllerURL, req.CAPEM, "")
	if err != nil {
		return nil, err
	}
	if rc := m.remembered(); rc.ControllerURL != "" && rc.ControllerURL == strings.TrimRight(req.ControllerURL, "/") {
		// Signing in again to the same deployment: its other replicas
		// answer when this URL does not.
		if err := cc.api.SetLearned(rc.Replicas); err != nil {
			m.log.Warn("controller replicas", "err", err)
		}
	}
	var resp *controlapi.LoginResponse
	if sso {
		resp, err = m.ssoLogin(ctx, req, lr)
	} else {
		resp, err = cc.login(ctx, lr)
	}
	if err != nil && isRevokedDeviceKey(err) {
		// The device was revoked (session ended by the controller): a new
		// sign-in enrolls this machine under a new key.
		if ok, rerr := m.rotateRevokedKey(); rerr != nil {
			m.log.Warn("replace revoked device key", "err", rerr)
		} else if ok && !sso {
			lr.DevicePublicKey = m.publicKey()
			resp, err = cc.login(ctx, lr)
		}
	}
	if err != nil {
		cc.close()
		return nil, err
	}
	info := &Info{
		ControllerURL: strings.TrimRight(req.ControllerURL, "/"), CAPEM: req.CAPEM,
		SessionToken: resp.SessionToken, ExpiresAt: resp.ExpiresAt, DeviceID: resp.DeviceID, Principal: resp.Principal,
	}
	cc.setToken(info.SessionToken)
	return &Grant{info: info, cc: cc}, nil
}

// Begin makes g the current session: it is saved, the previous session's
// work stops and its policy is forgotten, and the new session's policy
// stream starts. It waits for the previous session's loops (Observer calls
// included).
func (m *Manager) Begin(g *Grant) error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.closed.Load() {
		g.Discard()
		return ErrClosed
	}
	// Saving and cancelling the previous session's loops at once: a loop
	// that finds its session ended sees it was replaced, and does not
	// delete the new session's file.
	m.mu.Lock()
	if err := m.dir.WriteJSON(SessionFile, g.info); err != nil {
		m.mu.Unlock()
		g.Discard()
		return err
	}
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	m.mu.Unlock()
	m.rememberController(g.info)
	// A new sign-in replaces everything of the previous one.
	m.stopLoops()
	_ = m.dir.Remove(PolicyFile)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetPolicyLocked()
	m.info = g.info
	m.ctl = g.cc
	return m.startLocked()
}

// Logout revokes the session at the controller (best effort), stops its
// work and forgets the session and its policy. Signed out, it does nothing.
func (m *Manager) Logout(ctx context.Context) error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	info, cc := m.info, m.ctl
	m.mu.Unlock()
	if info == nil {
		return nil
	}
	if cc != nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := cc.logout(lctx); err != nil {
			m.log.Warn("revoke session at controller", "err", err)
		}
		cancel()
	}
	m.stopLoops()
	for _, f := range []string{SessionFile, PolicyFile} {
		if err := m.dir.Remove(f); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.info = nil
	m.forgetPolicyLocked()
	m.mu.Unlock()
	return nil
}

func (m *Manager) publicKey() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return base64.StdEncoding.EncodeToString(m.key.Public().(ed25519.PublicKey))
}

func (m *Manager) deviceName() string {
	if m.cfg.DeviceName != "" {
		return m.cfg.DeviceName
	}
	h, _ := os.Hostname()
	return h
}
