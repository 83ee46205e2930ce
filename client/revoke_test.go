package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"postern.dev/postern/client/session"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// adminDelete calls DELETE /api/v1/PATH on the lab's controller.
func (l *lab) adminDelete(path string) {
	t := l.t
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(l.ca))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(l.ctx, http.MethodDelete, l.url+"/api/v1/"+path, nil)
	req.Header.Set("Authorization", "Bearer "+l.ctl.AdminToken())
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("DELETE %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
}

// TestSessionRevokedSignsOut: after an administrator revokes the device at
// the real controller, the daemon is signed_out with the "session ended"
// message (not degraded), its flows and connections to connectors are torn
// down, the session is forgotten, status over the local API says so, and a
// new sign-in without a controller URL (the remembered one) enrolls a new
// device key and works again.
func TestSessionRevokedSignsOut(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnector("corp-a", nil)
	fe := NewSOCKS5Frontend("127.0.0.1:0")
	state := t.TempDir()
	d, err := New(Config{StateDir: state, Logger: testenv.Logger(t), NewFrontend: func() (Frontend, error) { return fe, nil },
		Preset: func() (preset.Preset, error) { return preset.Preset{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lc := serveLocalAPI(t, d)

	st := l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	c, code, err := socksConnect(fe, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("flow before revocation: code %d err %v", code, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("echo before revocation: %v", err)
	}
	oldKey, _ := os.ReadFile(filepath.Join(state, session.DeviceKeyFile))

	l.adminDelete("devices/" + st.DeviceID)

	testenv.Eventually(t, 15*time.Second, "signed_out after revocation", func() bool {
		s, err := lc.Status(l.ctx)
		return err == nil && s.State == localapi.StateSignedOut
	})
	s, _ := lc.Status(l.ctx)
	if s.Message != ErrSessionEnded.Error() || s.Message != "session ended by the controller: sign in again" {
		t.Errorf("status message %q, want %q", s.Message, ErrSessionEnded.Error())
	}
	if s.Principal != nil || len(s.Connectors) != 0 || s.ControllerReachable {
		t.Errorf("status after revocation still shows the session: %+v", s)
	}
	if s.ControllerURL != l.url {
		t.Errorf("status controller_url %q, want the remembered %q (where Sign in goes)", s.ControllerURL, l.url)
	}
	// The running flow was torn down.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("more")); err == nil {
		if _, err := io.ReadFull(c, buf); err == nil {
			t.Error("flow still echoes after the session ended")
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Error("flow neither answered nor closed after the session ended")
		}
	}
	if _, err := os.Stat(filepath.Join(state, session.SessionFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("session.json kept after revocation: %v", err)
	}
	if rs, _ := lc.Resources(l.ctx); len(rs) != 0 {
		t.Errorf("resources after revocation: %+v", rs)
	}
	if _, _, err := socksConnect(fe, "127.0.0.1", echoPort); err == nil {
		t.Error("the SOCKS5 proxy still accepts flows after the session ended")
	}

	// Sign in again without --controller: the remembered controller and CA;
	// the revoked key is set aside and a new device enrolled.
	st2, err := lc.Login(l.ctx, localapi.LoginRequest{Email: "alice@example.com", Password: "alice-password-1"})
	if err != nil {
		t.Fatalf("sign in again: %v", err)
	}
	if st2.DeviceID == "" || st2.DeviceID == st.DeviceID || st2.ControllerURL != l.url {
		t.Errorf("second sign-in: device %q (old %q) controller %q", st2.DeviceID, st.DeviceID, st2.ControllerURL)
	}
	if b, err := os.ReadFile(filepath.Join(state, session.DeviceKeyFile+session.RevokedKeySuffix)); err != nil || string(b) != string(oldKey) {
		t.Errorf("revoked key not kept aside: %v", err)
	}
	waitConnectors(t, d, 1)
	testenv.Eventually(t, 15*time.Second, "flow after signing in again", func() bool {
		c2, code, err := socksConnect(fe, "127.0.0.1", echoPort)
		if err != nil || code != 0 {
			return false
		}
		defer c2.Close()
		_, _ = c2.Write([]byte("pong"))
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(c2, buf)
		return err == nil && string(buf) == "pong"
	})
}
