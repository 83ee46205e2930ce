package installer

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"postern.dev/postern/internal/testenv"
)

// TestSystemdUnits runs `systemd-analyze verify` and `systemd-analyze
// security` on every installed unit, in a scratch root that also holds the
// host's own units (targets the Postern units refer to).
func TestSystemdUnits(t *testing.T) {
	requireTools(t, "dpkg", "systemd-analyze")
	testenv.RequireRoot(t, "installs into the system")
	f := getFixture(t)
	root := newScratchRoot(t)
	dpkgRoot(t, root, append([]string{"-i"}, f.files("deb")...)...)
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, host := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		entries, _ := os.ReadDir(host)
		for _, e := range entries {
			dst := filepath.Join(unitDir, e.Name())
			if _, err := os.Lstat(dst); err == nil || e.IsDir() {
				continue
			}
			src := filepath.Join(host, e.Name())
			if e.Type()&os.ModeSymlink != 0 {
				target, err := os.Readlink(src)
				if err == nil {
					os.Symlink(target, dst)
				}
				continue
			}
			if b, err := os.ReadFile(src); err == nil {
				os.WriteFile(dst, b, 0o644)
			}
		}
	}
	for _, p := range LinuxPackages() {
		unit := "/usr/lib/systemd/system/" + p.Unit
		out, err := exec.CommandContext(t.Context(), "systemd-analyze", "verify", "--root="+root, unit).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", p.Unit, err, out)
		}
		// Exposure 0.0 (locked down) .. 10.0 (unsafe); require "OK" (< 4.0).
		out, err = exec.CommandContext(t.Context(), "systemd-analyze", "security", "--offline=true", "--root="+root, "--threshold=40", unit).CombinedOutput()
		if err != nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			t.Errorf("systemd-analyze security %s: %v\n%s", p.Unit, err, lines[len(lines)-1])
		}
	}
	// A broken unit is caught: the check is not vacuous.
	bad := filepath.Join(unitDir, "postern-broken.service")
	b, _ := os.ReadFile(filepath.Join(unitDir, "postern-connector.service"))
	os.WriteFile(bad, []byte(strings.Replace(string(b), "/usr/bin/postern-connector", "/usr/bin/postern-missing", 1)), 0o644)
	if out, err := exec.CommandContext(t.Context(), "systemd-analyze", "verify", "--root="+root, "/usr/lib/systemd/system/postern-broken.service").CombinedOutput(); err == nil {
		t.Errorf("systemd-analyze accepted a unit whose program is missing:\n%s", out)
	}
}

// TestMaintainerScriptsSystemd runs the rendered maintainer scripts the way
// dpkg and rpm call them on a live systemd host: in a private mount namespace
// where /run/systemd/system exists, /etc/default is a scratch directory, and
// systemctl records its calls. It checks that the service is enabled on first
// install, started only once configured, stopped and started around upgrades,
// and stopped and disabled on removal.
func TestMaintainerScriptsSystemd(t *testing.T) {
	requireTools(t, "unshare", "mount", "sh")
	testenv.RequireRoot(t, "installs into the system")
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub")
	state := filepath.Join(dir, "state")
	defaults := filepath.Join(dir, "default")
	for _, d := range []string{stub, state, defaults} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "calls")
	systemctl := `#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
is-enabled) [ -e "$SYSTEMCTL_STATE/enabled" ] ;;
enable) touch "$SYSTEMCTL_STATE/enabled" ;;
disable) rm -f "$SYSTEMCTL_STATE/enabled" ;;
esac
`
	if err := os.WriteFile(filepath.Join(stub, "systemctl"), []byte(systemctl), 0o755); err != nil {
		t.Fatal(err)
	}
	var conn LinuxPackage
	for _, p := range LinuxPackages() {
		if p.Name == "postern-connector" {
			conn = p
		}
	}
	scripts, err := renderScripts(filepath.Join(dir, "stage"), conn)
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(defaults, conn.DefaultFile)
	setToken := func(tok string) {
		if err := os.WriteFile(envFile, []byte("POSTERN_CONNECTOR_TOKEN=\""+tok+"\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(script string, args ...string) []string {
		t.Helper()
		os.Remove(log)
		wrapper := `mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && mount --bind "$DEFAULTS" /etc/default && exec sh "$@"`
		cmd := exec.CommandContext(t.Context(), "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", wrapper, "sh", script}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+stub+":"+os.Getenv("PATH"), "SYSTEMCTL_LOG="+log, "SYSTEMCTL_STATE="+state, "DEFAULTS="+defaults, "DPKG_ROOT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", filepath.Base(script), args, err, out)
		}
		b, _ := os.ReadFile(log)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	unit := conn.Unit
	expect := func(step string, got []string, want ...string) {
		t.Helper()
		var calls []string
		for _, c := range got {
			if c != "" {
				calls = append(calls, c)
			}
		}
		if !slices.Equal(calls, want) {
			t.Errorf("%s: systemctl calls %q, want %q", step, calls, want)
		}
	}

	// Debian: fresh install without a token enables but does not start.
	setToken("")
	expect("deb install, unconfigured", run(scripts.PostInstall, "configure"),
		"daemon-reload", "enable "+unit, "is-enabled --quiet "+unit)
	// Token set, reconfigure: starts.
	setToken("pst1_test")
	expect("deb configure with token", run(scripts.PostInstall, "configure", "0.7.1-1"),
		"daemon-reload", "is-enabled --quiet "+unit, "restart "+unit)
	// Upgrade: old prerm stops, new postinst starts.
	expect("deb upgrade (old prerm)", run(scripts.PreRemove, "upgrade", "0.7.2-1"), "stop "+unit)
	expect("deb upgrade (new postinst)", run(scripts.PostInstall, "configure", "0.7.1-1"),
		"daemon-reload", "is-enabled --quiet "+unit, "restart "+unit)
	// Remove stops; purge removes the enabled link (checked in the dpkg test).
	expect("deb remove (prerm)", run(scripts.PreRemove, "remove"), "stop "+unit)
	expect("deb remove (postrm)", run(scripts.PostRemove, "remove"), "daemon-reload")

	// RPM: %post 1 enables and starts; upgrade restarts once, from %postun 1.
	os.Remove(filepath.Join(state, "enabled"))
	expect("rpm install", run(scripts.PostInstall, "1"),
		"daemon-reload", "enable "+unit, "is-enabled --quiet "+unit, "restart "+unit)
	expect("rpm upgrade (new %post)", run(scripts.PostInstall, "2"), "daemon-reload")
	expect("rpm upgrade (old %preun)", run(scripts.PreRemove, "1"))
	expect("rpm upgrade (old %postun)", run(scripts.PostRemove, "1"), "daemon-reload", "try-restart "+unit)
	expect("rpm erase (%preun)", run(scripts.PreRemove, "0"), "stop "+unit, "disable "+unit)
	expect("rpm erase (%postun)", run(scripts.PostRemove, "0"), "daemon-reload")
}
