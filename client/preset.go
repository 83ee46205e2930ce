package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
)

// controllerFile remembers the controller of the last sign-in (URL and CA),
// so that signing in again after a logout or a revoked session needs no
// --controller. It is never deleted by logout.
const controllerFile = "controller.json"

// rememberedController is the content of controllerFile.
type rememberedController struct {
	ControllerURL string `json:"controller_url"`
	CAPEM         string `json:"ca_pem,omitempty"`
	// Replicas are the controller's other URLs, as its last policy named
	// them: a sign-in to ControllerURL tries them when it gives no answer.
	Replicas []string `json:"replicas,omitempty"`
}

// loadPreset reads IT's presets (once, in New) and the remembered controller.
func (d *Daemon) loadPreset() {
	load := d.cfg.Preset
	if load == nil {
		load = preset.Load
	}
	p, err := load()
	if err != nil {
		d.log.Warn("ignoring unreadable presets", "err", err)
	}
	d.preset = p
}

// rememberController records sess's controller (called with d.mu held),
// keeping the replicas already learned for the same URL.
func (d *Daemon) rememberController(sess *Session) {
	rc := rememberedController{ControllerURL: sess.ControllerURL, CAPEM: sess.CAPEM}
	if old := d.remembered(); old.ControllerURL == rc.ControllerURL {
		rc.Replicas = old.Replicas
	}
	if err := d.state.writeJSON(controllerFile, rc); err != nil {
		d.log.Warn("remember controller", "err", err)
	}
}

// rememberReplicas records the controller's replicas from a policy (called
// with d.mu held), when they changed.
func (d *Daemon) rememberReplicas(urls []string) {
	if d.sess == nil {
		return
	}
	rc := d.remembered()
	if rc.ControllerURL != d.sess.ControllerURL || slices.Equal(rc.Replicas, urls) {
		return
	}
	rc.Replicas = urls
	if err := d.state.writeJSON(controllerFile, rc); err != nil {
		d.log.Warn("remember controller replicas", "err", err)
	}
}

func (d *Daemon) remembered() rememberedController {
	var rc rememberedController
	if _, err := d.state.readJSON(controllerFile, &rc); err != nil {
		d.log.Debug("remembered controller", "err", err)
	}
	return rc
}

// defaultControllerLocked is the controller a sign-in without a URL goes to:
// the preset (IT's choice) first, else the last one signed in to. The CA is
// the remembered one when it belongs to the same URL.
func (d *Daemon) defaultControllerLocked() (url, caPEM string) {
	rc := d.remembered()
	url = strings.TrimRight(d.preset.ControllerURL, "/")
	if url == "" {
		url = rc.ControllerURL
	}
	if url != "" && url == rc.ControllerURL {
		caPEM = rc.CAPEM
	}
	return url, caPEM
}

// fillController completes a request without a controller URL from the
// presets or the remembered controller. A request naming the default
// controller without a CA (the tray's Sign in…, which passes the URL from
// status) gets the CA remembered for it.
func (d *Daemon) fillController(url, caPEM *string) error {
	d.mu.Lock()
	u, ca := d.defaultControllerLocked()
	d.mu.Unlock()
	if *url != "" {
		if *caPEM == "" && u != "" && strings.TrimRight(*url, "/") == u {
			*caPEM = ca
		}
		return nil
	}
	if u == "" {
		return fmt.Errorf("%w: %w: pass --controller URL (or preset it: %s in %s, or HKLM\\%s\\%s on Windows)",
			ErrBadRequest, ErrNoController, preset.EnvControllerURL, preset.DefaultsFile, preset.RegistryKey, preset.RegControllerURL)
	}
	*url = u
	if *caPEM == "" {
		*caPEM = ca
	}
	return nil
}

// presetSignIn signs a headless machine in with the preset service-account
// key (POSTERN_SERVICE_KEY / HKLM\SOFTWARE\Postern ServiceKeyFile) when the
// daemon is not signed in. The controller is the preset one, else the one
// named in the key file, else the remembered one; caPEM is the deployment CA
// when the controller's certificate is not in the system roots (posternd
// --ca). While the controller is unreachable (the machine boots before its
// network) it retries with backoff until ctx is done; a refused key or a
// certificate mismatch is logged, shown in status, and not retried.
func (d *Daemon) presetSignIn(ctx context.Context, caPEM string) error {
	keyFile := d.preset.ServiceKeyFile
	if keyFile == "" {
		return nil
	}
	d.mu.Lock()
	signedIn := d.sess != nil
	url, rca := d.defaultControllerLocked()
	d.mu.Unlock()
	if signedIn {
		return nil
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return d.presetFailed(fmt.Errorf("preset service key: %w", err))
	}
	var sk controlapi.ServiceKey
	if err := json.Unmarshal(b, &sk); err != nil {
		return d.presetFailed(fmt.Errorf("preset service key %s is not a key file (JSON): %w", keyFile, err))
	}
	if strings.TrimRight(d.preset.ControllerURL, "/") == "" && sk.Controller != "" {
		url = strings.TrimRight(sk.Controller, "/")
	}
	if url == "" {
		return d.presetFailed(fmt.Errorf("preset service key %s: %w: preset %s too", keyFile, ErrNoController, preset.EnvControllerURL))
	}
	if caPEM == "" {
		caPEM = rca
	}
	req := localapi.LoginRequest{ControllerURL: url, CAPEM: caPEM, ServiceKey: string(b)}
	backoff := 2 * time.Second
	for {
		d.mu.Lock()
		signedIn := d.sess != nil
		d.mu.Unlock()
		if signedIn || d.closed.Load() {
			return nil // someone signed in meanwhile
		}
		st, err := d.Login(ctx, req)
		if err == nil {
			p := "?"
			if st.Principal != nil {
				p = st.Principal.Name
			}
			d.log.Info("signed in with the preset service key", "principal", p, "controller", url, "key", keyFile)
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return nil
		}
		if !errors.Is(err, ErrControllerUnreachable) {
			return d.presetFailed(fmt.Errorf("sign in with the preset service key %s at %s: %w", keyFile, url, err))
		}
		d.log.Warn("preset sign-in: controller unreachable; retrying", "controller", url, "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// presetFailed shows a preset sign-in failure in status (signed out).
func (d *Daemon) presetFailed(err error) error {
	d.log.Error("preset sign-in", "err", err)
	d.mu.Lock()
	if d.sess == nil {
		d.lastErr = err.Error()
	}
	d.mu.Unlock()
	d.changed()
	return err
}
