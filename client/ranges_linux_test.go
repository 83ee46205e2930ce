package client

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// TestRangesThroughDaemon runs the real posternd in the lab: a bad --range4
// and a range that overlaps the lab's own network are refused at start
// (naming the flag, and both sides of the conflict); a range from the preset
// (POSTERN_RANGE4) and --range6 carry traffic and show in `postern dns` and
// `postern status`; and `postern dns` explains names in SOCKS5 mode.
func TestRangesThroughDaemon(t *testing.T) {
	l := runningNetLab(t)
	exitCode := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return -1
	}

	bad := filepath.Join(l.dir, "bad")
	out, err := l.exec(l.cli, "", "posternd", "--state", bad, "--tun", "pst3", "--range4", "8.8.0.0/16")
	if exitCode(err) != 2 || !strings.Contains(out, "--range4 8.8.0.0/16") || !strings.Contains(out, "not private") {
		t.Errorf("public --range4: exit %d, want 2 and a message naming the flag:\n%s", exitCode(err), out)
	}
	out, err = l.exec(l.cli, "", "posternd", "--state", bad, "--socks5", "127.0.0.1:1090", "--range4", "10.1.0.0/16")
	if exitCode(err) != 2 || !strings.Contains(out, "--socks5") {
		t.Errorf("--range4 with --socks5: exit %d, want 2:\n%s", exitCode(err), out)
	}
	// 198.18.0.0/16 holds the lab's own 198.18.0.1/24 on pcli0.
	out, err = l.exec(l.cli, "", "posternd", "--state", bad, "--tun", "pst3", "--range4", "198.18.0.0/16")
	if err == nil || !strings.Contains(out, "198.18.0.0/16 overlaps") || !strings.Contains(out, "198.18.0.1/24 on pcli0") {
		t.Errorf("conflicting --range4: err %v, want a refusal naming both sides:\n%s", err, out)
	}
	if links, _ := l.exec(l.cli, "", "ip", "-o", "link"); strings.Contains(links, "pst3") {
		t.Errorf("a refused daemon left its TUN device:\n%s", links)
	}

	// The preset range (environment, as systemd passes /etc/default/posternd).
	state := filepath.Join(l.dir, "ranges")
	sock := filepath.Join(state, localapi.SocketName)
	l.start(l.cli, "ranges", nil, "/usr/bin/env", "POSTERN_RANGE4=198.19.128.0/20", filepath.Join(l.bin, "posternd"),
		"--state", state, "--tun", "pst3", "--range6", "2001:db8:5000::/48")
	testenv.Eventually(t, 10*time.Second, "posternd socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	if out, err := l.exec(l.cli, "alice-password-1\n", "postern", "--socket", sock, "login", "--controller", l.ctlURL, "--ca", l.caFile,
		"--user", "alice@example.com", "--password-stdin"); err != nil {
		t.Fatalf("postern login: %v\n%s", err, out)
	}
	testenv.Eventually(t, 30*time.Second, "curl by name through the configured range", func() bool {
		out, err = l.exec(l.cli, "", "curl", "-sS", "--max-time", "5", "http://app.corp.internal:8080/hello")
		return err == nil
	})
	if !strings.Contains(out, "hello from the private network") {
		t.Fatalf("curl by name: %q", out)
	}
	v4 := netip.MustParsePrefix("198.19.128.0/20")
	out, _ = l.exec(l.cli, "", "dig", "+short", "+time=3", "app.corp.internal", "A")
	if a, err := netip.ParseAddr(strings.TrimSpace(out)); err != nil || !v4.Contains(a) {
		t.Errorf("synthetic A %q is not in the preset range %s", out, v4)
	}
	out, err = l.exec(l.cli, "", "postern", "--socket", sock, "dns", "app.corp.internal")
	if err != nil || !strings.Contains(out, "Mode:        TUN, synthetic ranges 198.19.128.0/20, 2001:db8:5000::/48") ||
		!strings.Contains(out, "Resource:    app") || !strings.Contains(out, "198.19.1") {
		t.Errorf("postern dns in TUN mode: %v\n%s", err, out)
	}
	if st := l.status(sock); strings.Join(st.Ranges, " ") != "198.19.128.0/20 2001:db8:5000::/48" {
		t.Errorf("status ranges %v", st.Ranges)
	}
	if out, err := l.exec(l.cli, "", "postern", "--socket", sock, "status"); err != nil || !strings.Contains(out, "Ranges:      198.19.128.0/20, 2001:db8:5000::/48") {
		t.Errorf("postern status does not show the ranges: %v\n%s", err, out)
	}
	if routes, _ := l.exec(l.cli, "", "ip", "route", "show", "table", "all"); !strings.Contains(routes, "198.19.128.0/20 dev pst3") {
		t.Errorf("the configured range is not routed to the TUN:\n%s", routes)
	}

	// SOCKS5 mode: postern dns through the daemon.
	ssock := l.startDaemon("socks", "--socks5", "127.0.0.1:1081")
	testenv.Eventually(t, 20*time.Second, "SOCKS5 daemon connected", func() bool {
		return l.status(ssock).State == localapi.StateConnected
	})
	out, err = l.exec(l.cli, "", "postern", "--socket", ssock, "dns", "app.corp.internal")
	if err != nil || !strings.Contains(out, "Resource:    app (matches app.corp.internal)") || !strings.Contains(out, "Connectors:  corp-a") ||
		!strings.Contains(out, "Mode:        SOCKS5") || strings.Contains(out, "(synthetic)") {
		t.Errorf("postern dns in SOCKS5 mode: %v\n%s", err, out)
	}
	out, err = l.exec(l.cli, "", "postern", "--socket", ssock, "dns", "--json", "www.example.invalid")
	var ex localapi.DNSExplain
	if err != nil || json.Unmarshal([]byte(out), &ex) != nil || ex.Mode != "socks5" || ex.Resource != "" || len(ex.Ranges) != 0 {
		t.Errorf("postern dns --json of a non-resource in SOCKS5 mode: %v %+v\n%s", err, ex, out)
	}
}
