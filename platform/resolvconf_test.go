package platform

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const origResolv = "# from DHCP\nnameserver 198.51.100.53\nnameserver fd00::53\nsearch lab.example corp.example\noptions ndots:2 timeout:1\n"

func newTestResolvConf(t *testing.T) (*resolvConf, string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	c, err := newResolvConf(path, state)
	if err != nil {
		t.Fatal(err)
	}
	return c, path, state
}

var testDNS = DNSConfig{
	Nameservers:   []netip.Addr{netip.MustParseAddr("100.96.0.53")},
	SearchDomains: []string{"corp.internal", "lab.example"},
}

func TestResolvConfSetAndClose(t *testing.T) {
	c, path, state := newTestResolvConf(t)
	servers, search, err := c.OriginalResolvers()
	if err != nil {
		t.Fatal(err)
	}
	wantServers := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.53:53"), netip.MustParseAddrPort("[fd00::53]:53")}
	if !slices.Equal(servers, wantServers) || !slices.Equal(search, []string{"lab.example", "corp.example"}) {
		t.Fatalf("OriginalResolvers = %v %v", servers, search)
	}
	if c.SupportsSplitDNS() {
		t.Error("resolv.conf cannot do split DNS")
	}
	before, _ := os.Stat(path)
	if err := c.Set(testDNS); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	for _, want := range []string{resolvConfMarker, "nameserver 100.96.0.53\n", "search corp.internal lab.example corp.example\n", "options ndots:2 timeout:1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten file lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "198.51.100.53") {
		t.Errorf("original nameserver still listed (queries would bypass the proxy):\n%s", got)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Error("file was replaced, not rewritten in place (breaks bind mounts)")
	}
	if _, err := os.Stat(statePath(state)); err != nil {
		t.Errorf("no backup in the state dir: %v", err)
	}
	// A second Set keeps the first original.
	if err := c.Set(DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("100.96.0.53"), netip.MustParseAddr("fd7a:7073:746e::53")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != origResolv {
		t.Errorf("not restored:\n%s", b)
	}
	if _, err := os.Stat(statePath(state)); !os.IsNotExist(err) {
		t.Errorf("state left behind: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestResolvConfRestoreAfterCrash(t *testing.T) {
	c, path, state := newTestResolvConf(t)
	if err := c.Set(testDNS); err != nil {
		t.Fatal(err)
	}
	c.stopWatch() // the daemon dies here: no Close
	// The next start must refuse to take
	// a new backup of Postern's own file...
	if _, err := newResolvConf(path, state); !errors.Is(err, ErrDNSState) {
		t.Errorf("new configurator over a crashed one: %v, want ErrDNSState", err)
	}
	// ...and RestoreAfterCrash puts the original back.
	if err := RestoreAfterCrash(state); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != origResolv {
		t.Errorf("not restored:\n%s", b)
	}
	if err := RestoreAfterCrash(state); err != nil {
		t.Errorf("nothing to restore must not fail: %v", err)
	}
	if _, err := newResolvConf(path, state); err != nil {
		t.Errorf("after restore: %v", err)
	}
}

func TestResolvConfNotClobberedWhenRewrittenByOthers(t *testing.T) {
	c, path, state := newTestResolvConf(t)
	if err := c.Set(testDNS); err != nil {
		t.Fatal(err)
	}
	newer := "nameserver 203.0.113.53\n" // the DHCP client renewed the lease
	if err := os.WriteFile(path, []byte(newer), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != newer {
		t.Errorf("someone else's newer file was overwritten:\n%s", b)
	}
	if _, err := os.Stat(statePath(state)); !os.IsNotExist(err) {
		t.Errorf("state left behind: %v", err)
	}
}

func TestResolvConfMarkerWithoutBackup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	os.WriteFile(path, []byte(resolvConfMarker+"\nnameserver 100.96.0.53\n"), 0o644)
	_, err := newResolvConf(path, filepath.Join(dir, "state"))
	if !errors.Is(err, ErrDNSConfig) || !strings.Contains(err.Error(), "restore the file by hand") {
		t.Errorf("err = %v", err)
	}
}

func TestCorruptStateIsReported(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(statePath(dir), []byte("{"), 0o600)
	if err := RestoreAfterCrash(dir); !errors.Is(err, ErrDNSState) {
		t.Errorf("err = %v, want ErrDNSState", err)
	}
}

func TestSetWithoutNameserver(t *testing.T) {
	c, path, _ := newTestResolvConf(t)
	if err := c.Set(DNSConfig{}); !errors.Is(err, ErrDNSConfig) {
		t.Errorf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != origResolv {
		t.Error("bad input changed the file")
	}
}

func TestFindConflicts(t *testing.T) {
	entries := []netEntry{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), What: "route default", IfName: "eth0"},
		{Prefix: netip.MustParsePrefix("192.0.2.2/24"), What: "address 192.0.2.2/24 on eth0", IfName: "eth0"},
		{Prefix: netip.MustParsePrefix("100.64.0.0/10"), What: "route 100.64.0.0/10 dev tailscale0 table 52", IfName: "tailscale0"},
		{Prefix: netip.MustParsePrefix("100.96.0.53/32"), What: "address 100.96.0.53/32 on pst0", IfName: "pst0"},
		{Prefix: netip.MustParsePrefix("fd00::2/64"), What: "address fd00::2/64 on eth0", IfName: "eth0"},
	}
	tests := []struct {
		ranges []string
		except string
		want   []string
	}{
		{[]string{"198.18.0.0/15"}, "", nil},
		{[]string{"100.96.0.0/12"}, "", []string{"tailscale0", "pst0"}},
		{[]string{"100.96.0.0/12"}, "pst0", []string{"tailscale0"}},
		{[]string{"fd7a:7073:746e::/48"}, "", nil},
		{[]string{"fd00::/8"}, "", []string{"fd00::2/64"}},
		{[]string{"192.0.2.128/25"}, "", []string{"192.0.2.2/24"}},
	}
	for _, tt := range tests {
		var rs []netip.Prefix
		for _, r := range tt.ranges {
			rs = append(rs, netip.MustParsePrefix(r))
		}
		err := findConflicts(rs, entries, tt.except)
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("%v: %v", tt.ranges, err)
			}
			continue
		}
		if !errors.Is(err, ErrRangeConflict) {
			t.Errorf("%v: err = %v, want ErrRangeConflict", tt.ranges, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v does not name %s", tt.ranges, err, w)
			}
		}
		if tt.except != "" && strings.Contains(err.Error(), tt.except) {
			t.Errorf("%v: %v names the excepted interface", tt.ranges, err)
		}
	}
}

func TestResolvConfFollowsRewrites(t *testing.T) {
	c, path, state := newTestResolvConf(t)
	c.interval = 20 * time.Millisecond
	got := make(chan []netip.AddrPort, 1)
	c.OnOriginalChange(func(s []netip.AddrPort, _ []string) { got <- s })
	if err := c.Set(testDNS); err != nil {
		t.Fatal(err)
	}
	// The DHCP client renews the lease with another resolver.
	dhcp := "nameserver 203.0.113.53\nsearch wifi.example\n"
	if err := os.WriteFile(path, []byte(dhcp), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if !slices.Equal(s, []netip.AddrPort{netip.MustParseAddrPort("203.0.113.53:53")}) {
			t.Errorf("reported %v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("rewrite not noticed")
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), resolvConfMarker) || !strings.Contains(string(b), "search corp.internal lab.example wifi.example") {
		t.Errorf("not re-applied:\n%s", b)
	}
	// A crash now restores the DHCP client's file, the newest original.
	st, err := readState(state)
	if err != nil || string(st.Original) != dhcp {
		t.Errorf("backup not updated: %v %q", err, st.Original)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != dhcp {
		t.Errorf("Close restored %q, want the newest original", b)
	}
}
