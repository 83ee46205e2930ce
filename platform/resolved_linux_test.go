package platform

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"postern.dev/postern/internal/testenv"
)

// fakeResolved is an in-memory org.freedesktop.resolve1.Manager exported
// on a private bus: it records the calls with the argument types systemd
// documents, so a wrong D-Bus signature fails here.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeResolved) rec(s string, a ...any) *dbus.Error {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(s, a...))
	f.mu.Unlock()
	return nil
}

func (f *fakeResolved) SetLinkDNS(idx int32, addrs []struct {
	Family  int32
	Address []byte
}) *dbus.Error {
	var s []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Address)
		s = append(s, fmt.Sprintf("%d:%s", a.Family, ip))
	}
	return f.rec("SetLinkDNS %d %s", idx, strings.Join(s, ","))
}

func (f *fakeResolved) SetLinkDomains(idx int32, doms []struct {
	Domain      string
	RoutingOnly bool
}) *dbus.Error {
	var s []string
	for _, d := range doms {
		if d.RoutingOnly {
			s = append(s, "~"+d.Domain)
		} else {
			s = append(s, d.Domain)
		}
	}
	return f.rec("SetLinkDomains %d %s", idx, strings.Join(s, ","))
}

func (f *fakeResolved) SetLinkDefaultRoute(idx int32, v bool) *dbus.Error {
	return f.rec("SetLinkDefaultRoute %d %v", idx, v)
}
func (f *fakeResolved) SetLinkDNSSEC(idx int32, v string) *dbus.Error {
	return f.rec("SetLinkDNSSEC %d %s", idx, v)
}
func (f *fakeResolved) SetLinkLLMNR(idx int32, v string) *dbus.Error {
	return f.rec("SetLinkLLMNR %d %s", idx, v)
}
func (f *fakeResolved) SetLinkMulticastDNS(idx int32, v string) *dbus.Error {
	return f.rec("SetLinkMulticastDNS %d %s", idx, v)
}
func (f *fakeResolved) RevertLink(idx int32) *dbus.Error { return f.rec("RevertLink %d", idx) }
func (f *fakeResolved) FlushCaches() *dbus.Error         { return f.rec("FlushCaches") }

func (f *fakeResolved) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// privateBus starts a dbus-daemon for the test and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	testenv.RequireTools(t, "dbus-daemon")
	sock := filepath.Join(t.TempDir(), "bus")
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--address=unix:path="+sock, "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon address: %v", err)
	}
	return strings.TrimSpace(addr)
}

func TestResolvedOverDBus(t *testing.T) {
	addr := privateBus(t)
	svc, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	fake := &fakeResolved{}
	if err := svc.Export(fake, resolvedPath, resolvedManager); err != nil {
		t.Fatal(err)
	}
	if reply, err := svc.RequestName(resolvedBus, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("request name: %v %v", reply, err)
	}
	dir := t.TempDir()
	uplink := filepath.Join(dir, "uplink-resolv.conf")
	os.WriteFile(uplink, []byte("# resolved\nnameserver 198.51.100.53\nsearch lab.example\n"), 0o644)
	state := filepath.Join(dir, "state")
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newResolvedOn(conn, "lo", state, uplink)
	if err != nil {
		t.Fatal(err)
	}
	servers, search, err := c.OriginalResolvers()
	if err != nil || len(servers) != 1 || servers[0] != netip.MustParseAddrPort("198.51.100.53:53") || len(search) != 1 {
		t.Fatalf("OriginalResolvers = %v %v %v", servers, search, err)
	}
	if !c.SupportsSplitDNS() {
		t.Error("resolved does split DNS")
	}
	cfg := DNSConfig{
		Nameservers:   []netip.Addr{netip.MustParseAddr("100.96.0.53"), netip.MustParseAddr("fd7a:7073:746e::53")},
		MatchDomains:  []string{"corp.internal", "96.100.in-addr.arpa"},
		SearchDomains: []string{"lab.example", "corp.internal"},
	}
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SetLinkDNS 1 2:100.96.0.53,10:fd7a:7073:746e::53",
		"SetLinkDomains 1 ~corp.internal,~96.100.in-addr.arpa,corp.internal",
		"SetLinkDefaultRoute 1 false",
		"SetLinkDNSSEC 1 no", "SetLinkLLMNR 1 no", "SetLinkMulticastDNS 1 no", "FlushCaches",
	}
	if got := fake.take(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st, err := readState(state)
	if err != nil || st == nil || st.Mode != modeResolved || st.IfName != "lo" || st.IfIndex != 1 {
		t.Errorf("state = %+v %v", st, err)
	}
	// Full takeover.
	if err := c.Set(DNSConfig{Nameservers: cfg.Nameservers[:1]}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(fake.take(), "\n")
	if !strings.Contains(got, "SetLinkDomains 1 ~.\n") || !strings.Contains(got, "SetLinkDefaultRoute 1 true") {
		t.Errorf("full takeover calls:\n%s", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); len(got) != 1 || got[0] != "RevertLink 1" {
		t.Errorf("Close calls %v", got)
	}
	if st, _ := readState(state); st != nil {
		t.Errorf("state left: %+v", st)
	}
}
