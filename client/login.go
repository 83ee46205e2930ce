// Signing in and out, as the daemon composes it: the session (package
// client/session) trades the credential for a session and forgets it; the
// daemon takes the tunnel down before and brings it up after.

package client

import (
	"context"

	"postern.dev/postern/client/session"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// Session is the signed-in state kept in the state directory.
type Session = session.Info

// Login signs the device in with one credential, saves the session and
// brings the tunnel up. When the sign-in fails, nothing changes.
func (d *Daemon) Login(ctx context.Context, req localapi.LoginRequest) (localapi.Status, error) {
	g, err := d.sm.Authenticate(ctx, req)
	if err != nil {
		return localapi.Status{}, err
	}
	d.mu.Lock()
	if d.closed.Load() {
		d.mu.Unlock()
		g.Discard()
		return localapi.Status{}, ErrClosed
	}
	// A new sign-in replaces everything of the previous one.
	d.downLocked()
	d.mu.Unlock()
	if err := d.sm.Begin(g); err != nil {
		return localapi.Status{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.syncPolicyLocked()
	d.lastErr = ""
	_ = d.state.WriteJSON(prefsFile, Prefs{WantUp: true})
	if err := d.upLocked(); err != nil {
		return d.statusLocked(), err
	}
	info := g.Info()
	d.log.Info("signed in", "principal", info.Principal.Name, "controller", info.ControllerURL)
	return d.statusLocked(), nil
}

// Logout revokes the session at the controller (best effort), takes the
// tunnel down and forgets the session and policy.
func (d *Daemon) Logout(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	if !d.sm.SignedIn() {
		defer d.mu.Unlock()
		return d.statusLocked(), nil
	}
	d.downLocked()
	d.mu.Unlock()
	err := d.sm.Logout(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		return d.statusLocked(), err
	}
	if err := d.state.Remove(prefsFile); err != nil {
		return d.statusLocked(), err
	}
	d.syncPolicyLocked()
	d.lastErr = ""
	d.changed()
	return d.statusLocked(), nil
}

// presetSignIn signs a headless machine in with the preset service-account
// key when the daemon is not signed in (session.Manager.PresetSignIn); a
// failure is logged and shown in status while signed out.
func (d *Daemon) presetSignIn(ctx context.Context, caPEM string) error {
	err := d.sm.PresetSignIn(ctx, caPEM, d.Login)
	if err != nil {
		d.log.Error("preset sign-in", "err", err)
		d.mu.Lock()
		if !d.sm.SignedIn() {
			d.lastErr = err.Error()
		}
		d.mu.Unlock()
		d.changed()
	}
	return err
}

// SSOStart starts a browser sign-in at the controller for the CLI or tray.
func (d *Daemon) SSOStart(ctx context.Context, req localapi.SSOStartRequest) (*controlapi.OIDCStartResponse, error) {
	return d.sm.SSOStart(ctx, req)
}

// SSODevice starts a device sign-in at the controller.
func (d *Daemon) SSODevice(ctx context.Context, req localapi.SSODeviceRequest) (*controlapi.OIDCDeviceStartResponse, error) {
	return d.sm.SSODevice(ctx, req)
}
