package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
)

// serveDaemon runs a daemon with its local API for the test: cfg's
// StateDir, Logger and NewFrontend default to a temporary directory, a
// silent logger and a SOCKS5 front-end. It returns the daemon and socket.
func serveDaemon(t *testing.T, cfg client.Config) (*client.Daemon, string) {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = discard()
	}
	if cfg.NewFrontend == nil {
		cfg.NewFrontend = func() (client.Frontend, error) { return client.NewSOCKS5Frontend("127.0.0.1:0"), nil }
	}
	d, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	sock := filepath.Join(cfg.StateDir, localapi.SocketName)
	srv, err := client.ListenLocalAPI(d, sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return d, sock
}

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, IO{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "posternd.sock")
	code, _, stderr := runCLI(t, "", "--socket", sock, "status")
	if code != 1 || !strings.Contains(stderr, "posternd is not running") || !strings.Contains(stderr, "sudo posternd --state") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	t.Setenv(localapi.EnvSocket, sock)
	if code, _, stderr = runCLI(t, "", "up"); code != 1 || !strings.Contains(stderr, sock) {
		t.Errorf("POSTERN_SOCKET not used: exit %d %s", code, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "posternd.sock")
	cases := map[string][]string{
		"--password-stdin":             {"login", "--controller", "https://x", "--user", "a@b.c"},
		"not both":                     {"login", "--controller", "https://x", "--user", "a@b.c", "--password-stdin", "--service-key", "k.json"},
		"--device is a single":         {"login", "--controller", "https://x", "--device", "--user", "a@b.c"},
		"unknown command":              {"frobnicate"},
		"dns NAME":                     {"dns"},
		"takes no arguments":           {"up", "now"},
		"status takes no arguments":    {"status", "--json", "x"},
		"resources takes no arguments": {"resources", "x"},
		"posture takes no arguments":   {"posture", "x"},
		"requests takes no arguments":  {"requests", "--json", "x"},
		"netcheck takes no arguments":  {"netcheck", "x"},
		"status flags":                 {"status", "--bogus"},
	}
	for want, args := range cases {
		code, _, stderr := runCLI(t, "", append([]string{"--socket", sock}, args...)...)
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", args, code, stderr, want)
		}
	}
}

func TestStatusAgainstDaemon(t *testing.T) {
	_, sock := serveDaemon(t, client.Config{})

	code, out, _ := runCLI(t, "", "--socket", sock, "status", "--json")
	var st localapi.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.State != localapi.StateSignedOut {
		t.Fatalf("status --json: %d %s", code, out)
	}
	code, out, _ = runCLI(t, "", "--socket", sock, "status")
	if code != 0 || !strings.Contains(out, "Signed out") {
		t.Errorf("status: %d %s", code, out)
	}
	code, _, stderr := runCLI(t, "", "--socket", sock, "up")
	if code != 1 || !strings.Contains(stderr, "not signed in") || !strings.Contains(stderr, "postern login") {
		t.Errorf("up signed out: %d %s", code, stderr)
	}
	code, _, stderr = runCLI(t, "", "--socket", sock, "resources")
	if code != 1 || !strings.Contains(stderr, "not signed in") {
		t.Errorf("resources signed out: %d %s", code, stderr)
	}
	// Unreachable controller: the error names the URL.
	code, _, stderr = runCLI(t, "pw\n", "--socket", sock, "login", "--controller", "https://127.0.0.1:1", "--user", "a@example.com", "--password-stdin")
	if code != 1 || !strings.Contains(stderr, "https://127.0.0.1:1") || !strings.Contains(stderr, "unreachable") {
		t.Errorf("login to unreachable controller: %d %s", code, stderr)
	}
}

// TestVersion: postern --version and postern version print the version
// (the latter also the daemon's when one answers).
func TestVersion(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "posternd.sock")
	for _, args := range [][]string{{"--version"}, {"--socket", sock, "version"}} {
		code, out, stderr := runCLI(t, "", args...)
		if code != 0 || !strings.HasPrefix(out, "postern "+version.Version+"\n") {
			t.Errorf("%v: exit %d out %q err %q", args, code, out, stderr)
		}
	}
}

// TestLoginWithoutController: with no --controller, no preset and nothing
// remembered, the daemon says what to pass or preset.
func TestLoginWithoutController(t *testing.T) {
	t.Setenv(preset.EnvControllerURL, "")
	t.Setenv(preset.EnvServiceKey, "")
	_, sock := serveDaemon(t, client.Config{Preset: func() (preset.Preset, error) { return preset.Preset{}, nil }})
	code, _, stderr := runCLI(t, "pw\n", "--socket", sock, "login", "--user", "a@example.com", "--password-stdin")
	if code != 1 || !strings.Contains(stderr, "no controller URL") || !strings.Contains(stderr, "--controller URL") || !strings.Contains(stderr, preset.EnvControllerURL) {
		t.Errorf("login without a controller: exit %d, stderr %q", code, stderr)
	}
}

// TestDescribeSessionEnded: a session the controller ended reads as signed
// out with the reason, not as degraded.
func TestDescribeSessionEnded(t *testing.T) {
	st := localapi.Status{State: localapi.StateSignedOut, Message: client.ErrSessionEnded.Error(), ControllerURL: "https://ctl.example"}
	if got := describeState(st); got != "Signed out: session ended by the controller: sign in again." {
		t.Errorf("describeState = %q", got)
	}
}

// TestDescribeNoConnectorReachable: never a bare "Connected." while no
// connector has a connection; each says since when and why.
func TestDescribeNoConnectorReachable(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	st := localapi.Status{State: localapi.StateDegraded, ControllerReachable: true, Connectors: []localapi.ConnectorStatus{
		{Name: "corp-a", State: "reconnecting", Since: since, LastError: "dial connector corp-a: via relay relay-1: context deadline exceeded"},
	}}
	got := describeState(st)
	if !strings.HasPrefix(got, "Degraded: no connector reachable (corp-a reconnecting since 03:04:05)") {
		t.Errorf("describeState = %q", got)
	}
	st.Connectors = append(st.Connectors, localapi.ConnectorStatus{Name: "corp-b", State: "connected", Connected: true})
	if got := describeState(st); strings.Contains(got, "no connector reachable") {
		t.Errorf("with corp-b connected: %q", got)
	}
}
