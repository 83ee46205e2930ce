package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// TestPresetDefaultsFile runs the real programs with the presets in
// /etc/default/posternd (inside the client namespace: ip netns exec mounts
// /etc/netns/NS/default over /etc/default): posternd signs in with the preset
// service key at start (the deployment CA from --ca), and postern login
// without --controller uses the preset controller.
func TestPresetDefaultsFile(t *testing.T) {
	l := runningNetLab(t)
	tokFile := filepath.Join(l.dir, "controller", "admin-token")
	yamlFile := filepath.Join(l.dir, "network-sa.yaml")
	if err := os.WriteFile(yamlFile, []byte(netnsYAML+"service_accounts:\n  - name: ci\n    groups: [engineering]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.exec(l.conn, "", "postern-controller", "apply", "--url", l.ctlURL, "--ca", l.caFile, "--token-file", tokFile, "-f", yamlFile); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := l.exec(l.conn, "", "postern-controller", "service-key", "--url", l.ctlURL, "--ca", l.caFile, "--token-file", tokFile, "ci")
	if err != nil {
		t.Fatalf("service-key: %v\n%s", err, out)
	}
	keyJSON := out[strings.Index(out, "{"):]
	keyFile := filepath.Join(l.dir, "ci.key")
	if err := os.WriteFile(keyFile, []byte(keyJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	defDir := "/etc/netns/" + l.cli + "/default"
	if err := os.MkdirAll(defDir, 0o755); err != nil {
		t.Fatal(err)
	}
	defaults := "# written by TestPresetDefaultsFile\nPOSTERND_FLAGS=\"\"\nPOSTERN_CONTROLLER_URL=\"" + l.ctlURL + "\"\nPOSTERN_SERVICE_KEY=\"" + keyFile + "\"\n"
	if err := os.WriteFile(filepath.Join(defDir, "posternd"), []byte(defaults), 0o644); err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(l.dir, "headless")
	sock := filepath.Join(state, localapi.SocketName)
	l.daemons = append(l.daemons, l.start(l.cli, "headless", nil, "posternd", "--state", state, "--socks5", "127.0.0.1:1080", "--ca", l.caFile))
	var st localapi.Status
	testenv.Eventually(t, 20*time.Second, "headless daemon signed in with the preset key", func() bool {
		if _, err := os.Stat(sock); err != nil {
			return false
		}
		out, err := l.exec(l.cli, "", "postern", "--socket", sock, "status", "--json")
		return err == nil && strings.Contains(out, `"name": "ci"`)
	})
	st = l.status(sock)
	if st.Principal == nil || st.Principal.Kind != "service_account" || st.ControllerURL != l.ctlURL {
		t.Fatalf("headless status: %+v", st)
	}
	testenv.Eventually(t, 20*time.Second, "curl through the headless daemon", func() bool {
		creds, err := os.ReadFile(st.SOCKS5Secret)
		if err != nil {
			return false
		}
		out, err = l.exec(l.cli, "", "curl", "-sS", "--max-time", "5", "--socks5-hostname", "127.0.0.1:1080", "--proxy-user", strings.TrimSpace(string(creds)), "http://198.19.0.10:8080/hello")
		return err == nil && strings.Contains(out, "hello from the private network")
	})

	// postern login without --controller: the preset controller.
	out, err = l.exec(l.cli, "alice-password-1\n", "postern", "--socket", sock, "login", "--ca", l.caFile, "--user", "alice@example.com", "--password-stdin")
	if err != nil || !strings.Contains(out, "Signed in to "+l.ctlURL+" as alice@example.com") {
		t.Fatalf("postern login without --controller: %v\n%s", err, out)
	}
}
