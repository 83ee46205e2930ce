// Signing in and out: Login trades one credential for a session and brings
// the tunnel up; Logout ends the session at the controller and forgets it.

package client

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

// Login signs the device in with one credential, saves the session and
// brings the tunnel up.
func (d *Daemon) Login(ctx context.Context, req localapi.LoginRequest) (localapi.Status, error) {
	if err := d.fillController(&req.ControllerURL, &req.CAPEM); err != nil {
		return localapi.Status{}, err
	}
	lr := controlapi.LoginRequest{
		Email: req.Email, Password: req.Password, IDToken: req.IDToken,
		DevicePublicKey: base64.StdEncoding.EncodeToString(d.key.Public().(ed25519.PublicKey)),
		DeviceName:      d.deviceName(),
		OS:              runtime.GOOS,
	}
	n := 0
	if req.Email != "" || req.Password != "" {
		n++
		if req.Email == "" || req.Password == "" {
			return localapi.Status{}, fmt.Errorf("%w: both email and password are required", ErrBadRequest)
		}
	}
	if req.ServiceKey != "" {
		n++
		var sk controlapi.ServiceKey
		if err := json.Unmarshal([]byte(req.ServiceKey), &sk); err != nil {
			return localapi.Status{}, fmt.Errorf("%w: service key file is not valid JSON: %v", ErrBadRequest, err)
		}
		if sk.AccountID == "" || sk.Secret == "" {
			return localapi.Status{}, fmt.Errorf("%w: service key file lacks account_id or secret", ErrBadRequest)
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
		return localapi.Status{}, fmt.Errorf("%w: give exactly one credential (user and password, a service key, or a single sign-on grant)", ErrBadRequest)
	}
	cc, err := newControlClient(req.ControllerURL, req.CAPEM, "")
	if err != nil {
		return localapi.Status{}, err
	}
	if rc := d.remembered(); rc.ControllerURL != "" && rc.ControllerURL == strings.TrimRight(req.ControllerURL, "/") {
		// Signing in again to the same deployment: its other replicas
		// answer when this URL does not.
		if err := cc.api.SetLearned(rc.Replicas); err != nil {
			d.log.Warn("controller replicas", "err", err)
		}
	}
	var resp *controlapi.LoginResponse
	if sso {
		resp, err = d.ssoLogin(ctx, req, lr)
	} else {
		resp, err = cc.login(ctx, lr)
	}
	if err != nil && isRevokedDeviceKey(err) {
		// The device was revoked (session ended by the controller): a new
		// sign-in enrolls this machine under a new key.
		if ok, rerr := d.rotateRevokedKey(); rerr != nil {
			d.log.Warn("replace revoked device key", "err", rerr)
		} else if ok && !sso {
			lr.DevicePublicKey = base64.StdEncoding.EncodeToString(d.key.Public().(ed25519.PublicKey))
			resp, err = cc.login(ctx, lr)
		}
	}
	if err != nil {
		cc.close()
		return localapi.Status{}, err
	}
	sess := &Session{
		ControllerURL: strings.TrimRight(req.ControllerURL, "/"), CAPEM: req.CAPEM,
		SessionToken: resp.SessionToken, ExpiresAt: resp.ExpiresAt, DeviceID: resp.DeviceID, Principal: resp.Principal,
	}
	cc.setToken(sess.SessionToken)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		cc.close()
		return localapi.Status{}, ErrClosed
	}
	if err := d.state.writeJSON(sessionFile, sess); err != nil {
		cc.close()
		return localapi.Status{}, err
	}
	d.rememberController(sess)
	// A new sign-in replaces everything of the previous one.
	d.downLocked()
	d.stopSessionLocked()
	_ = d.state.remove(policyFile)
	d.pol = nil
	d.relays.Store(nil)
	d.table.Store(buildRouteTable(nil))
	d.sess = sess
	d.ctl = cc
	d.lastErr = ""
	if err := d.startSessionLocked(); err != nil {
		return localapi.Status{}, err
	}
	_ = d.state.writeJSON(prefsFile, Prefs{WantUp: true})
	if err := d.upLocked(); err != nil {
		return d.statusLocked(), err
	}
	d.log.Info("signed in", "principal", sess.Principal.Name, "controller", sess.ControllerURL)
	return d.statusLocked(), nil
}

func (d *Daemon) deviceName() string {
	if d.cfg.DeviceName != "" {
		return d.cfg.DeviceName
	}
	h, _ := os.Hostname()
	return h
}

// Logout revokes the session at the controller (best effort), takes the
// tunnel down and forgets the session and policy.
func (d *Daemon) Logout(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return d.statusLocked(), nil
	}
	d.downLocked()
	if d.ctl != nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := d.ctl.logout(lctx); err != nil {
			d.log.Warn("revoke session at controller", "err", err)
		}
		cancel()
	}
	d.stopSessionLocked()
	for _, f := range []string{sessionFile, policyFile, prefsFile} {
		if err := d.state.remove(f); err != nil {
			return d.statusLocked(), err
		}
	}
	d.sess, d.pol = nil, nil
	d.relays.Store(nil)
	d.table.Store(buildRouteTable(nil))
	d.lastErr = ""
	d.changed()
	return d.statusLocked(), nil
}
