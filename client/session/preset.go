package session

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
func (m *Manager) loadPreset() {
	load := m.cfg.Preset
	if load == nil {
		load = preset.Load
	}
	p, err := load()
	if err != nil {
		m.log.Warn("ignoring unreadable presets", "err", err)
	}
	m.preset = p
}

// rememberController records sess's controller (called with m.mu held),
// keeping the replicas already learned for the same URL.
func (m *Manager) rememberController(sess *Info) {
	rc := rememberedController{ControllerURL: sess.ControllerURL, CAPEM: sess.CAPEM}
	if old := m.remembered(); old.ControllerURL == rc.ControllerURL {
		rc.Replicas = old.Replicas
	}
	if err := m.dir.WriteJSON(controllerFile, rc); err != nil {
		m.log.Warn("remember controller", "err", err)
	}
}

// rememberReplicas records the controller's replicas from a policy (called
// with m.mu held), when they changed.
func (m *Manager) rememberReplicas(urls []string) {
	if m.info == nil {
		return
	}
	rc := m.remembered()
	if rc.ControllerURL != m.info.ControllerURL || slices.Equal(rc.Replicas, urls) {
		return
	}
	rc.Replicas = urls
	if err := m.dir.WriteJSON(controllerFile, rc); err != nil {
		m.log.Warn("remember controller replicas", "err", err)
	}
}

func (m *Manager) remembered() rememberedController {
	var rc rememberedController
	if _, err := m.dir.ReadJSON(controllerFile, &rc); err != nil {
		m.log.Debug("remembered controller", "err", err)
	}
	return rc
}

// DefaultController is the controller a sign-in without a URL goes to:
// the preset (IT's choice) first, else the last one signed in to. The CA is
// the remembered one when it belongs to the same URL.
func (m *Manager) DefaultController() (url, caPEM string) {
	rc := m.remembered()
	url = strings.TrimRight(m.preset.ControllerURL, "/")
	if url == "" {
		url = rc.ControllerURL
	}
	if url != "" && url == rc.ControllerURL {
		caPEM = rc.CAPEM
	}
	return url, caPEM
}

// FillController completes a request without a controller URL from the
// presets or the remembered controller. A request naming the default
// controller without a CA (the tray's Sign in…, which passes the URL from
// status) gets the CA remembered for it.
func (m *Manager) FillController(url, caPEM *string) error {
	u, ca := m.DefaultController()
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

// PresetSignIn signs a headless machine in with the preset service-account
// key (POSTERN_SERVICE_KEY / HKLM\SOFTWARE\Postern ServiceKeyFile) when
// there is no session, through signIn (the daemon's Login, which also
// brings the tunnel up). The controller is the preset one, else the one
// named in the key file, else the remembered one; caPEM is the deployment CA
// when the controller's certificate is not in the system roots (posternd
// --ca). While the controller is unreachable (the machine boots before its
// network) it retries with backoff until ctx is done; a refused key or a
// certificate mismatch is returned, and not retried.
func (m *Manager) PresetSignIn(ctx context.Context, caPEM string, signIn func(context.Context, localapi.LoginRequest) (localapi.Status, error)) error {
	keyFile := m.preset.ServiceKeyFile
	if keyFile == "" || m.SignedIn() {
		return nil
	}
	url, rca := m.DefaultController()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("preset service key: %w", err)
	}
	var sk controlapi.ServiceKey
	if err := json.Unmarshal(b, &sk); err != nil {
		return fmt.Errorf("preset service key %s is not a key file (JSON): %w", keyFile, err)
	}
	if strings.TrimRight(m.preset.ControllerURL, "/") == "" && sk.Controller != "" {
		url = strings.TrimRight(sk.Controller, "/")
	}
	if url == "" {
		return fmt.Errorf("preset service key %s: %w: preset %s too", keyFile, ErrNoController, preset.EnvControllerURL)
	}
	if caPEM == "" {
		caPEM = rca
	}
	req := localapi.LoginRequest{ControllerURL: url, CAPEM: caPEM, ServiceKey: string(b)}
	backoff := 2 * time.Second
	for {
		if m.SignedIn() || m.closed.Load() {
			return nil // someone signed in meanwhile
		}
		st, err := signIn(ctx, req)
		if err == nil {
			p := "?"
			if st.Principal != nil {
				p = st.Principal.Name
			}
			m.log.Info("signed in with the preset service key", "principal", p, "controller", url, "key", keyFile)
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return nil
		}
		if !errors.Is(err, ErrControllerUnreachable) {
			return fmt.Errorf("sign in with the preset service key %s at %s: %w", keyFile, url, err)
		}
		m.log.Warn("preset sign-in: controller unreachable; retrying", "controller", url, "in", backoff, "err", err)
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
