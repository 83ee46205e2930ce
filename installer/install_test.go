package installer

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// newScratchRoot makes an empty dpkg root.
func newScratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info", "var/lib/dpkg/triggers", "etc/systemd/system/multi-user.target.wants"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dpkgRoot runs dpkg on root; maintainer scripts run outside a chroot with
// DPKG_ROOT set, so they must not touch the live system.
func dpkgRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := runCmd(t.Context(), "", nil, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// installedFiles lists the regular files and symlinks under root outside dpkg's database.
func installedFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			out = append(out, "/"+rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDebInstallUpgradePurge installs every .deb into a scratch root, runs the
// installed programs, upgrades the client keeping the admin's settings, then
// purges everything and checks that nothing is left.
func TestDebInstallUpgradePurge(t *testing.T) {
	requireTools(t, "dpkg", "dpkg-query")
	testenv.RequireRoot(t, "installs into the system")
	f := getFixture(t)
	root := newScratchRoot(t)
	dpkgRoot(t, root, append([]string{"-i"}, f.files("deb")...)...)

	for _, p := range LinuxPackages() {
		for _, prog := range p.Programs {
			installed := filepath.Join(root, "usr/bin", prog)
			got, err := os.ReadFile(installed)
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			want, _ := os.ReadFile(filepath.Join(f.bin, prog))
			if !bytes.Equal(got, want) {
				t.Errorf("%s: installed %s differs from the built program", p.Name, prog)
			}
			if st, _ := os.Stat(installed); st.Mode().Perm() != 0o755 {
				t.Errorf("%s mode %v, want 0755", installed, st.Mode().Perm())
			}
			checkVersion(t, installed, prog)
		}
		if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/system", p.Unit)); err != nil {
			t.Errorf("%s: unit not installed: %v", p.Name, err)
		}
		st, err := os.Stat(filepath.Join(root, "etc/default", p.DefaultFile))
		if err != nil {
			t.Errorf("%s: settings file not installed: %v", p.Name, err)
		} else if st.Mode().Perm() != p.DefaultMode {
			t.Errorf("/etc/default/%s mode %v, want %v", p.DefaultFile, st.Mode().Perm(), p.DefaultMode)
		}
	}
	for _, want := range []string{"etc/xdg/autostart/postern-tray.desktop", "usr/lib/postern/posternd-restore"} {
		if _, err := os.Stat(filepath.Join(root, want)); err != nil {
			t.Errorf("client file missing: %v", err)
		}
	}
	conff, err := runCmd(t.Context(), "", nil, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Conffiles}\n", "postern-connector")
	if err != nil || !strings.Contains(conff, "/etc/default/postern-connector") {
		t.Errorf("/etc/default/postern-connector is not a conffile (kept on upgrade): %q %v", conff, err)
	}

	// Upgrade the client: the admin's settings survive.
	settings := filepath.Join(root, "etc/default/posternd")
	edited := "POSTERN_CONTROLLER_URL=\"https://postern.example.com\"\n"
	if err := os.WriteFile(settings, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	next := t.TempDir()
	if _, err := runCmd(t.Context(), "", f.pkgEnv, f.pkgTool, "--version", "0.7.2", "--arch", runtime.GOARCH, "--bin", f.bin,
		"--out", next, "--targets", "linux", "--packages", "postern-client"); err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(next, "postern-client_0.7.2-1_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("upgrade build: %v", debs)
	}
	dpkgRoot(t, root, "-i", debs[0])
	ver, err := runCmd(t.Context(), "", nil, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Version} ${db:Status-Abbrev}", "postern-client")
	if err != nil || !strings.HasPrefix(ver, "0.7.2-1 ii") {
		t.Errorf("after upgrade: %q %v, want 0.7.2-1 installed", ver, err)
	}
	if b, _ := os.ReadFile(settings); string(b) != edited {
		t.Errorf("upgrade replaced the admin's /etc/default/posternd:\n%s", b)
	}

	// State the services would have written, and enabled units.
	for _, d := range []string{"var/lib/postern", "var/lib/private/postern-connector", "var/lib/private/postern-relay", "var/lib/private/postern-controller"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, d, "state"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range LinuxPackages() {
		if err := os.Symlink("/usr/lib/systemd/system/"+p.Unit, filepath.Join(root, "etc/systemd/system/multi-user.target.wants", p.Unit)); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, p := range LinuxPackages() {
		names = append(names, p.Name)
	}
	dpkgRoot(t, root, append([]string{"--purge"}, names...)...)
	if left := installedFiles(t, root); len(left) != 0 {
		t.Errorf("purge left files behind: %v", left)
	}
	for _, d := range []string{"var/lib/postern", "var/lib/private/postern-connector", "var/lib/postern-controller"} {
		if _, err := os.Stat(filepath.Join(root, d)); err == nil {
			t.Errorf("purge left %s", d)
		}
	}
}

// checkVersion runs an installed program with --version: it must exit 0 and
// print the packaged version.
func checkVersion(t *testing.T, path, prog string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("%s --version did not return within 10s", prog)
		return
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Errorf("%s does not run: %v", prog, err)
		return
	}
	if !strings.Contains(string(out), testVersion) {
		t.Errorf("%s --version printed %q (exit %v), want a line with %s", prog, strings.TrimSpace(string(out)), err, testVersion)
		return
	}
	if err != nil {
		t.Errorf("%s --version printed its version but exited with %v", prog, err)
	}
}
