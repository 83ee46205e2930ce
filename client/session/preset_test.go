package session

import (
	"errors"
	"testing"

	"postern.dev/postern/installer/preset"
	"postern.dev/postern/internal/testenv"
)

// TestFillControllerPrecedence: a sign-in without a controller goes to IT's
// preset first, else to the remembered one; the remembered CA comes along
// only for the URL it belongs to.
func TestFillControllerPrecedence(t *testing.T) {
	const (
		remURL = "https://ctl-a.test:8443"
		remCA  = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
		preURL = "https://ctl-b.test"
	)
	mk := func(t *testing.T, p preset.Preset, remember bool) *Manager {
		st, err := OpenStateDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if remember {
			if err := st.WriteJSON(controllerFile, rememberedController{ControllerURL: remURL, CAPEM: remCA}); err != nil {
				t.Fatal(err)
			}
		}
		m, err := New(Config{Dir: st, Logger: testenv.Logger(t), Preset: func() (preset.Preset, error) { return p, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	fill := func(m *Manager, url, ca string) (string, string, error) {
		err := m.FillController(&url, &ca)
		return url, ca, err
	}

	t.Run("nothing preset or remembered", func(t *testing.T) {
		m := mk(t, preset.Preset{}, false)
		if _, _, err := fill(m, "", ""); !errors.Is(err, ErrNoController) || !errors.Is(err, ErrBadRequest) {
			t.Fatalf("fill with nothing known: %v, want ErrNoController and ErrBadRequest", err)
		}
	})
	t.Run("remembered", func(t *testing.T) {
		m := mk(t, preset.Preset{}, true)
		if u, ca, err := fill(m, "", ""); err != nil || u != remURL || ca != remCA {
			t.Errorf("fill: %q (CA %v) %v, want the remembered URL and CA", u, ca != "", err)
		}
		// The tray passes the URL from status without a CA.
		if u, ca, err := fill(m, remURL+"/", ""); err != nil || u != remURL+"/" || ca != remCA {
			t.Errorf("fill of the remembered URL: %q CA %v %v, want its CA", u, ca != "", err)
		}
		if _, ca, err := fill(m, "https://elsewhere.test", ""); err != nil || ca != "" {
			t.Errorf("another URL got CA %q (%v); the remembered CA belongs to %s only", ca, err, remURL)
		}
		if u, ca, _ := fill(m, "", "mine"); u != remURL || ca != "mine" {
			t.Errorf("a given CA was replaced: %q %q", u, ca)
		}
	})
	t.Run("preset beats remembered", func(t *testing.T) {
		m := mk(t, preset.Preset{ControllerURL: preURL + "/"}, true)
		if u, ca := m.DefaultController(); u != preURL || ca != "" {
			t.Errorf("default controller %q (CA %v), want the preset %q without the other URL's CA", u, ca != "", preURL)
		}
	})
	t.Run("preset is the remembered one", func(t *testing.T) {
		m := mk(t, preset.Preset{ControllerURL: remURL}, true)
		if u, ca := m.DefaultController(); u != remURL || ca != remCA {
			t.Errorf("default controller %q (CA %v), want %q with its remembered CA", u, ca != "", remURL)
		}
	})
}

// TestBeginAfterClose: a sign-in finishing while the daemon shuts down is
// dropped, and nothing of it is saved.
func TestBeginAfterClose(t *testing.T) {
	f := newFakeController(t)
	m := newManager(t, t.TempDir(), nil)
	g, err := m.Authenticate(t.Context(), passwordLogin(f))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := m.Begin(g); !errors.Is(err, ErrClosed) {
		t.Fatalf("begin after close: %v, want ErrClosed", err)
	}
	if m.SignedIn() {
		t.Error("signed in after close")
	}
	if info, err := m.dir.session(); err != nil || info != nil {
		t.Errorf("session saved after close: %+v %v", info, err)
	}
}
