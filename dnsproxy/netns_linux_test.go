package dnsproxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
	"postern.dev/postern/platform"
)

// TestDNSInNetns runs the proxy with the real platform code inside a network
// namespace: a TUN device carrying 100.96.0.53, routes, /etc/resolv.conf
// rewritten, and the system's own tools (getent, dig) resolving through it.
// Then the process is killed with SIGKILL, and the next start restores the
// namespace's resolv.conf.
func TestDNSInNetns(t *testing.T) {
	testenv.RequireNetns(t, "dig", "getent")
	const orig = "nameserver 127.0.0.1\nsearch corp.internal\n"
	ns := netnstest.New(t, "pstdns", orig)
	resolv := filepath.Join(netnstest.EtcDir(ns), "resolv.conf")
	state := t.TempDir()

	daemon := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetnsDaemon$", "-test.v")
	daemon.Env = append(os.Environ(), "POSTERN_DNS_HELPER=daemon", "POSTERN_DNS_STATE="+state)
	daemon.Stderr = os.Stderr
	out, _ := daemon.StdoutPipe()
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer daemon.Process.Kill()
	testenv.WaitReady(t, "daemon", out, 60*time.Second)
	inNS := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil && args[0] != "getent" {
			t.Errorf("%v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	synth := netip.MustParsePrefix("100.96.0.0/12")
	isSynth := func(s string) bool {
		a, err := netip.ParseAddr(strings.Fields(s + " x")[0])
		return err == nil && synth.Contains(a)
	}
	// getent goes through glibc and /etc/resolv.conf (bind-mounted).
	g1 := inNS("getent", "hosts", "db.corp.internal")
	t.Logf("getent hosts db.corp.internal in %s: %s", ns, g1)
	if !isSynth(g1) {
		t.Errorf("getent hosts db.corp.internal = %q, want a synthetic address", g1)
	}
	if g := inNS("getent", "hosts", "db"); !isSynth(g) || strings.Fields(g)[0] != strings.Fields(g1)[0] {
		t.Errorf("getent hosts db (search domain) = %q, want %q", g, g1)
	}
	if d := inNS("dig", "+short", "+tries=1", "+time=3", "db.corp.internal"); !isSynth(d) || d != strings.Fields(g1)[0] {
		t.Errorf("dig db.corp.internal = %q, want %s", d, strings.Fields(g1)[0])
	}
	if d := inNS("dig", "+short", "+tcp", "+tries=1", "+time=3", "@100.96.0.53", "a.b.web.corp.internal"); !isSynth(d) {
		t.Errorf("dig +tcp wildcard = %q", d)
	}
	if d := inNS("dig", "+short", "+tries=1", "+time=3", "www.example.test"); d != "192.0.2.99" {
		t.Errorf("public name = %q, want the upstream's 192.0.2.99", d)
	}
	if d := inNS("dig", "+tries=1", "+time=3", "secret.corp.internal"); !strings.Contains(d, "status: NXDOMAIN") {
		t.Errorf("a name the user may not use must get the upstream's answer (NXDOMAIN):\n%s", d)
	}
	if d := inNS("dig", "+short", "+tries=1", "+time=3", "-x", strings.Fields(g1)[0]); d != "db.corp.internal." {
		t.Errorf("PTR = %q", d)
	}
	if d := inNS("dig", "+short", "+tries=1", "+time=3", "AAAA", "db.corp.internal"); d != "" {
		t.Errorf("AAAA with IPv6 off = %q, want nothing", d)
	}

	// A host next to the machine that routes 100.96.0.53 to it gets no
	// answer, over UDP or TCP, though the address itself answers pings.
	outside := outsideHost(t, ns)
	fromOutside := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", outside}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := fromOutside("ping", "-c1", "-W3", "100.96.0.53"); err != nil {
		t.Fatalf("the outside host cannot reach 100.96.0.53 at all, the check below would prove nothing: %v %s", err, out)
	}
	for _, proto := range []string{"+notcp", "+tcp"} {
		if out, err := fromOutside("dig", "+short", proto, "+tries=1", "+time=2", "@100.96.0.53", "db.corp.internal"); err == nil || isSynth(out) {
			t.Errorf("dig %s from another host answered: %q (err %v), want no answer", proto, out, err)
		}
	}
	if d := inNS("dig", "+short", "+tries=1", "+time=3", "db.corp.internal"); !isSynth(d) {
		t.Errorf("local dig after the outside attempts = %q", d)
	}

	// kill -9, then the next start restores resolv.conf.
	daemon.Process.Kill()
	daemon.Wait()
	if b, _ := os.ReadFile(resolv); string(b) == orig {
		t.Fatal("resolv.conf was never changed")
	}
	restore := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetnsDaemon$")
	restore.Env = append(os.Environ(), "POSTERN_DNS_HELPER=restore", "POSTERN_DNS_STATE="+state)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v %s", err, out)
	}
	if b, _ := os.ReadFile(resolv); string(b) != orig {
		t.Errorf("after kill -9 and restart resolv.conf = %q, want %q", b, orig)
	}
}

// TestNetnsDaemon is the process TestDNSInNetns runs inside the namespace:
// what posternd does for DNS, with a static upstream on 127.0.0.1:53.
func TestNetnsDaemon(t *testing.T) {
	mode := os.Getenv("POSTERN_DNS_HELPER")
	if mode == "" {
		t.Skip("helper process only")
	}
	state := os.Getenv("POSTERN_DNS_STATE")
	fail := func(f string, a ...any) { fmt.Printf("HELPER-FAIL "+f+"\n", a...); os.Exit(3) }
	if err := platform.RestoreAfterCrash(state); err != nil {
		fail("restore: %v", err)
	}
	if mode == "restore" {
		os.Exit(0)
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		fail("lo up: %v", err)
	}
	// The "corporate" upstream the machine used before: knows public names only.
	upc, err := net.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		fail("upstream: %v", err)
	}
	go (&dns.Server{PacketConn: upc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; strings.EqualFold(q.Name, "www.example.test.") && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 99)})
		} else if !strings.EqualFold(q.Name, "www.example.test.") {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}).ActivateAndServe()

	osc, err := platform.NewOSConfigurator("pst0", state)
	if err != nil {
		fail("configurator: %v", err)
	}
	ups, search, err := osc.OriginalResolvers()
	if err != nil {
		fail("original resolvers: %v", err)
	}
	p, err := New(Config{Upstreams: ups, SearchDomains: search, StateFile: filepath.Join(state, "names.json"), Logger: quiet})
	if err != nil {
		fail("proxy: %v", err)
	}
	p.SetResources(corpResources)
	if err := CheckRangeConflicts(p.Ranges()); err != nil {
		fail("conflicts: %v", err)
	}
	dev, err := platform.CreateTUN(platform.TUNOptions{Name: "pst0"})
	if err != nil {
		fail("tun: %v", err)
	}
	defer dev.Close()
	router, err := platform.NewRouter("pst0")
	if err != nil {
		fail("router: %v", err)
	}
	var addrs []netip.Prefix
	for _, a := range p.Addrs() {
		addrs = append(addrs, netip.PrefixFrom(a, a.BitLen()))
	}
	if err := router.Set(addrs, p.Ranges()); err != nil {
		fail("routes: %v", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	pc, ln, err := Listen(ctx, netip.AddrPortFrom(p.Addrs()[0], 53), "pst0")
	if err != nil {
		fail("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pc, ln) }()
	if err := osc.Set(platform.DNSConfig{Nameservers: p.Addrs(), MatchDomains: p.MatchDomains(), SearchDomains: search}); err != nil {
		fail("set dns: %v", err)
	}
	b, _ := os.ReadFile("/etc/resolv.conf")
	if !bytes.Contains(b, []byte("nameserver 100.96.0.53")) {
		fail("resolv.conf in the namespace: %s", b)
	}
	fmt.Println("READY")
	<-done
	osc.Close()
	router.Close()
	os.Exit(0)
}

// outsideHost creates a namespace linked to ns by a veth pair
// (198.18.0.2/30 outside, 198.18.0.1/30 in ns) with a route to 100.96.0.53
// through ns: another host on the machine's LAN. It returns its name.
func outsideHost(t *testing.T, ns string) string {
	t.Helper()
	out := netnstest.New(t, "pstout", "nameserver 198.18.0.1\n")
	netnstest.Link(t, ns, "lan0", "198.18.0.1/30", out, "lan0", "198.18.0.2/30")
	netnstest.MustIP(t, "-n", out, "route", "add", "100.96.0.53/32", "via", "198.18.0.1")
	return out
}
