package client

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/platform"
)

// watchingOSC is an OSConfigurator that reports a change of the system's
// own resolvers, as the resolv.conf and systemd-resolved ones do.
type watchingOSC struct {
	mu sync.Mutex
	f  func([]netip.AddrPort, []string)
}

func (w *watchingOSC) OriginalResolvers() ([]netip.AddrPort, []string, error) { return nil, nil, nil }
func (w *watchingOSC) SupportsSplitDNS() bool                                 { return false }
func (w *watchingOSC) Set(platform.DNSConfig) error                           { return nil }
func (w *watchingOSC) Close() error                                           { return nil }
func (w *watchingOSC) OnOriginalChange(f func([]netip.AddrPort, []string)) {
	w.mu.Lock()
	w.f = f
	w.mu.Unlock()
}
func (w *watchingOSC) change(servers []netip.AddrPort) {
	w.mu.Lock()
	f := w.f
	w.mu.Unlock()
	if f != nil {
		f(servers, nil)
	}
}

// fixedDNS serves A answers with ip for every name on loopback UDP.
func fixedDNS(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	return netip.MustParseAddrPort(testenv.ServeDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(ip)})
		_ = w.WriteMsg(m)
	})))
}

// TestForwardingFollowsOriginalResolvers: when the OS configurator reports
// new system resolvers (another network), the real DNS proxy forwards
// non-resource names to them.
func TestForwardingFollowsOriginalResolvers(t *testing.T) {
	a, b := fixedDNS(t, "192.0.2.1"), fixedDNS(t, "192.0.2.2")
	px, err := newDNSProxy(DNSProxyConfig{StateFile: filepath.Join(t.TempDir(), "dns-state.json"), Upstreams: []netip.AddrPort{a}, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	osc := &watchingOSC{}
	f := &TUNFrontend{osc: osc, dns: px, log: testenv.Logger(t)}
	f.watchOriginalResolvers()

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = px.Serve(ctx, pc, nil) }()
	defer func() { cancel(); <-done }()
	ask := func() string {
		m := new(dns.Msg)
		m.SetQuestion("www.example.com.", dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second}
		r, _, err := c.Exchange(m, pc.LocalAddr().String())
		if err != nil || len(r.Answer) == 0 {
			return ""
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	if got := ask(); got != "192.0.2.1" {
		t.Fatalf("forwarded before the change: %q, want the first resolver's 192.0.2.1", got)
	}
	osc.change([]netip.AddrPort{b})
	testenv.Eventually(t, 5*time.Second, "forwarding to the new resolver", func() bool { return ask() == "192.0.2.2" })
}
