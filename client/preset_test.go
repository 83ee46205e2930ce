package client

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/installer/preset"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

var presetYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: echo
    address: 127.0.0.1
    network: corp
    ports: [tcp/ECHOPORT]
    groups: [engineering]
service_accounts:
  - name: ci
    groups: [engineering]
`

// runDaemon runs client.Run (SOCKS5 mode) until the test ends and returns
// a local API client.
func runDaemon(t *testing.T, state string, ca string) *localapi.Client {
	t.Helper()
	sock := filepath.Join(state, localapi.SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunOptions{StateDir: state, SOCKS5: "127.0.0.1:0", SocketGroup: -1, CAPEM: ca, Logger: testenv.Logger(t)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	lc := localapi.NewClient(sock)
	t.Cleanup(lc.Close)
	testenv.Eventually(t, 10*time.Second, "daemon socket", func() bool {
		_, err := lc.Status(context.Background())
		return err == nil
	})
	return lc
}

// TestPresetServiceKeySignIn covers the Linux presets path end to end with
// the real installer/preset.Load (environment variables, as systemd passes
// /etc/default/posternd): a headless daemon with POSTERN_CONTROLLER_URL and
// POSTERN_SERVICE_KEY signs in as the service account at start and reaches
// a resource; a preset controller URL is used by a sign-in without one; an
// unusable key file leaves the daemon signed out with a message naming it.
func TestPresetServiceKeySignIn(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, strings.ReplaceAll(presetYAML, "ECHOPORT", itoa(int(echoPort))))
	l.startConnector("corp-a", nil)
	sk, err := l.ctl.CreateServiceKey(l.ctx, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ci.key")
	b, _ := json.Marshal(sk)
	if err := os.WriteFile(keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(preset.EnvControllerURL, l.url)
	t.Setenv(preset.EnvServiceKey, keyFile)

	t.Run("service key at start", func(t *testing.T) {
		lc := runDaemon(t, t.TempDir(), l.ca)
		var st localapi.Status
		testenv.Eventually(t, 15*time.Second, "signed in with the preset service key", func() bool {
			st, _ = lc.Status(context.Background())
			return st.State == localapi.StateConnected
		})
		if st.Principal == nil || st.Principal.Name != "ci" || st.Principal.Kind != "service_account" || st.ControllerURL != l.url {
			t.Fatalf("status after preset sign-in: principal %+v controller %q", st.Principal, st.ControllerURL)
		}
		rs, err := lc.Resources(context.Background())
		if err != nil || len(rs) != 1 || rs[0].Name != "echo" {
			t.Errorf("resources of the service account: %+v %v", rs, err)
		}
	})

	t.Run("signed in already: the preset is left alone", func(t *testing.T) {
		state := t.TempDir()
		lc := runDaemon(t, state, l.ca)
		testenv.Eventually(t, 15*time.Second, "preset sign-in", func() bool {
			st, _ := lc.Status(context.Background())
			return st.Principal != nil
		})
		// A user signs in without --controller: the preset URL is used.
		st, err := lc.Login(context.Background(), localapi.LoginRequest{CAPEM: l.ca, Email: "alice@example.com", Password: "alice-password-1"})
		if err != nil || st.Principal == nil || st.Principal.Name != "alice@example.com" || st.ControllerURL != l.url {
			t.Fatalf("login without a controller URL: %+v %v", st.Principal, err)
		}
	})

	t.Run("unusable key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.key")
		if err := os.WriteFile(bad, []byte("not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(preset.EnvServiceKey, bad)
		lc := runDaemon(t, t.TempDir(), l.ca)
		var st localapi.Status
		testenv.Eventually(t, 10*time.Second, "preset failure in status", func() bool {
			st, _ = lc.Status(context.Background())
			return st.Message != ""
		})
		if st.State != localapi.StateSignedOut || !strings.Contains(st.Message, bad) {
			t.Errorf("status with a bad preset key: %s %q", st.State, st.Message)
		}
	})

	t.Run("no controller anywhere", func(t *testing.T) {
		t.Setenv(preset.EnvControllerURL, "")
		t.Setenv(preset.EnvServiceKey, "")
		d, err := New(Config{StateDir: t.TempDir(), Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.Login(context.Background(), localapi.LoginRequest{Email: "alice@example.com", Password: "x"})
		if !errors.Is(err, ErrNoController) || !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "--controller") {
			t.Errorf("login with no controller: %v", err)
		}
	})
}
