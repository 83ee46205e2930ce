package client

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// TestRestoreAfterCrash kills a TUN daemon with SIGKILL (a crash: it cannot
// restore anything) and checks that posternd --restore puts the namespace's
// resolv.conf back, removes Postern's routes (proto 88) still on a device of
// the TUN's name but no other route, exits 0 with nothing to do when run
// again, and refuses to touch anything while a daemon is running.
func TestRestoreAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("network-namespace test")
	}
	l := newNetLab(t)
	l.build()
	if out, err := exec.Command(filepath.Join(l.bin, "posternd"), "--help").CombinedOutput(); !strings.Contains(string(out), "-restore") {
		t.Fatalf("posternd --help does not list -restore (the packages' posternd-restore checks it): %v\n%s", err, out)
	}
	l.startControlPlane()
	state := filepath.Join(l.dir, "tun")
	l.startDaemon("tun", "--tun", "pst0")
	resolvPath := "/etc/netns/" + l.cli + "/resolv.conf"
	const original = "nameserver 198.18.0.2\n"
	testenv.Eventually(t, 20*time.Second, "resolv.conf pointing at the DNS proxy", func() bool {
		b, _ := os.ReadFile(resolvPath)
		return strings.Contains(string(b), "100.96.0.53")
	})

	// While the daemon runs, --restore refuses and changes nothing.
	out, err := l.exec(l.cli, "", "posternd", "--restore", "--state", state, "--tun", "pst0")
	if err == nil || !strings.Contains(out, "posternd is running") {
		t.Errorf("--restore with the daemon running: err %v, output %q; want a refusal", err, out)
	}
	if b, _ := os.ReadFile(resolvPath); !strings.Contains(string(b), "100.96.0.53") {
		t.Errorf("--restore changed resolv.conf under a running daemon: %q (restore said %q)", b, out)
	}

	// Crash.
	cmd := l.daemons[0]
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if b, _ := os.ReadFile(resolvPath); !strings.Contains(string(b), "100.96.0.53") {
		t.Fatalf("after SIGKILL resolv.conf is already restored? (no crash simulated)\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(state, "os-dns-backup.json")); err != nil {
		t.Fatalf("no DNS backup after the crash: %v", err)
	}
	// The TUN device vanished with the process; a device of the same name
	// that outlived it (persistent TUN, stuck process) is simulated with a
	// dummy link carrying Postern's routes and one route of someone else.
	testenv.Eventually(t, 10*time.Second, "pst0 gone with the killed daemon", func() bool {
		_, err := l.exec(l.cli, "", "ip", "link", "show", "pst0")
		return err != nil
	})
	for _, args := range [][]string{
		{"tuntap", "add", "dev", "pst0", "mode", "tun"},
		{"link", "set", "pst0", "up"},
		{"route", "add", "100.96.0.0/12", "dev", "pst0", "proto", "88"},
		{"route", "add", "198.19.0.10/32", "dev", "pst0", "proto", "88"},
		{"route", "add", "198.18.5.0/24", "dev", "pst0", "proto", "static"},
	} {
		if out, err := l.exec(l.cli, "", "ip", args...); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}

	out, err = l.exec(l.cli, "", "posternd", "--restore", "--state", state, "--tun", "pst0")
	if err != nil {
		t.Fatalf("posternd --restore: %v\n%s", err, out)
	}
	if !strings.Contains(out, "restored the DNS configuration") || !strings.Contains(out, "removed 2 stale route(s)") {
		t.Errorf("--restore output: %q", out)
	}
	if b, _ := os.ReadFile(resolvPath); string(b) != original {
		t.Errorf("resolv.conf after --restore = %q, want %q", b, original)
	}
	if _, err := os.Stat(filepath.Join(state, "os-dns-backup.json")); !os.IsNotExist(err) {
		t.Errorf("DNS backup still there after --restore: %v", err)
	}
	routes, _ := l.exec(l.cli, "", "ip", "route", "show", "dev", "pst0")
	if strings.Contains(routes, "100.96.0.0/12") || strings.Contains(routes, "198.19.0.10") {
		t.Errorf("Postern's routes left on pst0:\n%s", routes)
	}
	if !strings.Contains(routes, "198.18.5.0/24") {
		t.Errorf("--restore removed a route it does not own:\n%s", routes)
	}

	// Again: nothing to do, exit 0 (ExecStopPost after a clean stop).
	out, err = l.exec(l.cli, "", "posternd", "--restore", "--state", state, "--tun", "pst0")
	if err != nil || !strings.Contains(out, "nothing to restore") {
		t.Errorf("second --restore: %v %q", err, out)
	}
	// A state directory that never saw a daemon: nothing to do either.
	out, err = l.exec(l.cli, "", "posternd", "--restore", "--state", filepath.Join(l.dir, "fresh"))
	if err != nil || !strings.Contains(out, "nothing to restore") {
		t.Errorf("--restore on a fresh state directory: %v %q", err, out)
	}
}
