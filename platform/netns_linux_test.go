package platform

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

// netns creates a network namespace with its own /etc/netns/NS/resolv.conf
// (holding resolv), removed when the test ends.
func netns(t *testing.T, resolv string) (name, resolvPath string) {
	t.Helper()
	// The file exists before anything runs in the namespace, so that
	// "ip netns exec" bind-mounts it over /etc/resolv.conf.
	name = netnstest.New(t, "pstdns", resolv)
	return name, filepath.Join(netnstest.EtcDir(name), "resolv.conf")
}

// helper runs this test binary inside the namespace in the given mode (see
// TestNetnsHelper).
func helper(ns, mode, state string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetnsHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "POSTERN_PLATFORM_HELPER="+mode, "POSTERN_PLATFORM_STATE="+state)
	return cmd
}

// TestNetnsHelper is the program run inside the namespaces.
func TestNetnsHelper(t *testing.T) {
	mode := os.Getenv("POSTERN_PLATFORM_HELPER")
	if mode == "" {
		t.Skip("helper process only")
	}
	state := os.Getenv("POSTERN_PLATFORM_STATE")
	fail := func(f string, a ...any) { fmt.Printf("HELPER-FAIL "+f+"\n", a...); os.Exit(3) }
	switch mode {
	case "dns-set", "dns-close":
		// No explicit RestoreAfterCrash: NewOSConfigurator undoes what a
		// killed run left behind.
		c, err := NewOSConfigurator("pst0", state)
		if err != nil {
			fail("configurator: %v", err)
		}
		if c.SupportsSplitDNS() {
			fail("inside a namespace the resolv.conf configurator must be chosen")
		}
		servers, search, err := c.OriginalResolvers()
		if err != nil {
			fail("original resolvers: %v", err)
		}
		fmt.Printf("ORIGINAL %v %v\n", servers, search)
		if err := c.Set(DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("100.96.0.53")}, SearchDomains: []string{"corp.internal"}}); err != nil {
			fail("set: %v", err)
		}
		if mode == "dns-close" {
			if err := c.Close(); err != nil {
				fail("close: %v", err)
			}
			fmt.Println("CLOSED")
			os.Exit(0)
		}
		fmt.Println("READY")
		time.Sleep(time.Hour) // until SIGKILL
	case "dns-restore":
		if err := RestoreAfterCrash(state); err != nil {
			fail("restore: %v", err)
		}
		fmt.Println("RESTORED")
		os.Exit(0)
	case "router":
		routerHelper(fail)
		fmt.Println("ROUTER-OK")
		os.Exit(0)
	}
	fail("unknown mode %q", mode)
}

func TestResolvConfCrashRestoreInNetns(t *testing.T) {
	testenv.RequireNetns(t)
	hostBefore, hostErr := os.ReadFile("/etc/resolv.conf")
	const orig = "nameserver 198.51.100.53\nsearch lab.example\noptions ndots:2\n"
	ns, path := netns(t, orig)
	st0, _ := os.Stat(path)
	state := t.TempDir()

	for round, next := range []string{"dns-restore", "dns-close"} {
		crashed(t, ns, path, state)
		// Next start: RestoreAfterCrash, or NewOSConfigurator itself.
		out, err := helper(ns, next, state).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("RESTORED")) && !bytes.Contains(out, []byte("CLOSED")) {
			t.Fatalf("round %d: %s helper: %v\n%s", round, next, err, out)
		}
		if b, _ := os.ReadFile(path); string(b) != orig {
			t.Errorf("round %d: namespace resolv.conf after kill -9 and %s:\n%q\nwant\n%q", round, next, b, orig)
		}
		if st1, _ := os.Stat(path); !os.SameFile(st0, st1) {
			t.Error("namespace resolv.conf was replaced, not rewritten in place")
		}
		if _, err := os.Stat(statePath(state)); !os.IsNotExist(err) {
			t.Errorf("round %d: backup left in the state dir: %v", round, err)
		}
	}
	// Graceful path: Set then Close.
	if out, err := helper(ns, "dns-close", state).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("CLOSED")) {
		t.Fatalf("close helper: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Errorf("after Close:\n%q", b)
	}
	// The machine's own file was never touched.
	if hostAfter, err := os.ReadFile("/etc/resolv.conf"); hostErr == nil && (err != nil || !bytes.Equal(hostBefore, hostAfter)) {
		t.Errorf("the machine's /etc/resolv.conf changed!")
	}
}

// crashed runs the configurator in the namespace until it has rewritten
// resolv.conf, then kills it with SIGKILL.
func crashed(t *testing.T, ns, path, state string) {
	t.Helper()
	cmd := helper(ns, "dns-set", state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got := testenv.WaitReady(t, "helper", out, 60*time.Second); !strings.Contains(got, "ORIGINAL [198.51.100.53:53] [lab.example]") {
		t.Errorf("original resolvers as read in the namespace: %s", got)
	}
	b, _ := os.ReadFile(path)
	if !bytes.HasPrefix(b, []byte(resolvConfMarker)) || !bytes.Contains(b, []byte("nameserver 100.96.0.53\n")) ||
		!bytes.Contains(b, []byte("search corp.internal lab.example\n")) || !bytes.Contains(b, []byte("options ndots:2\n")) {
		t.Fatalf("namespace resolv.conf not rewritten:\n%s", b)
	}
	cmd.Process.Kill() // kill -9: no chance to restore
	cmd.Wait()
	if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, []byte(resolvConfMarker)) {
		t.Fatalf("file changed without the daemon:\n%s", b)
	}
}

func TestRouterAndConflictsInNetns(t *testing.T) {
	testenv.RequireNetns(t)
	ns, _ := netns(t, "nameserver 198.51.100.53\n")
	out, err := helper(ns, "router", t.TempDir()).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("ROUTER-OK")) {
		t.Fatalf("router helper: %v\n%s", err, out)
	}
}

// routerHelper runs inside a fresh namespace: a real TUN device, routes set
// and removed through the Router, and the conflict check.
func routerHelper(fail func(string, ...any)) {
	if err := CheckRangeConflicts([]netip.Prefix{netip.MustParsePrefix("100.96.0.0/12")}); err != nil {
		fail("empty namespace has conflicts: %v", err)
	}
	dev, err := CreateTUN(TUNOptions{Name: "pst0"})
	if err != nil {
		fail("create tun: %v", err)
	}
	defer dev.Close()
	r, err := NewRouter("pst0")
	if err != nil {
		fail("router: %v", err)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix("100.96.0.53/32")}
	routes := []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12"), netip.MustParsePrefix("198.18.5.0/24")}
	if err := r.Set(addrs, routes); err != nil {
		fail("set: %v", err)
	}
	has := func(p string) bool {
		link, _ := netlink.LinkByName("pst0")
		rs, _ := netlink.RouteList(link, netlink.FAMILY_V4)
		for _, rt := range rs {
			if rt.Dst != nil && rt.Dst.String() == p {
				return true
			}
		}
		return false
	}
	if !has("100.96.0.0/12") || !has("198.18.5.0/24") {
		fail("routes not installed")
	}
	if ifc, _ := net.InterfaceByName("pst0"); ifc == nil || ifc.Flags&net.FlagUp == 0 {
		fail("device not up")
	}
	// Local delivery to the proxy address works (the DNS proxy binds it).
	pc, err := net.ListenPacket("udp", "100.96.0.53:0")
	if err != nil {
		fail("bind the DNS address: %v", err)
	}
	pc.Close()
	// Our own routes conflict unless excepted.
	rng := []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12")}
	if err := CheckRangeConflicts(rng); err == nil || !strings.Contains(err.Error(), "pst0") {
		fail("own routes not reported: %v", err)
	}
	if err := CheckRangeConflictsExcept(rng, "pst0"); err != nil {
		fail("excepted device still conflicts: %v", err)
	}
	// Another interface in the range: refused, naming it.
	other, err := CreateTUN(TUNOptions{Name: "othervpn0"})
	if err != nil {
		fail("second tun: %v", err)
	}
	defer other.Close()
	d, err := netlink.LinkByName("othervpn0")
	if err != nil {
		fail("second tun: %v", err)
	}
	a, _ := netlink.ParseAddr("100.100.1.1/16")
	if err := netlink.AddrAdd(d, a); err != nil {
		fail("second tun addr: %v", err)
	}
	if err := CheckRangeConflictsExcept(rng, "pst0"); err == nil || !strings.Contains(err.Error(), "othervpn0") {
		fail("conflict with othervpn0 not reported: %v", err)
	}
	// Removing a route, then Close.
	if err := r.Set(addrs, routes[:1]); err != nil {
		fail("set fewer: %v", err)
	}
	if has("198.18.5.0/24") || !has("100.96.0.0/12") {
		fail("route not removed")
	}
	if err := r.Close(); err != nil {
		fail("close: %v", err)
	}
	if has("100.96.0.0/12") {
		fail("route left after Close")
	}
	if err := r.Set([]netip.Prefix{{}}, nil); err == nil {
		fail("invalid prefix accepted")
	}
}
