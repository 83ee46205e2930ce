package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/connector"
	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/netstack/netstacktest"
	"postern.dev/postern/platform"
)

// IPv6 resources: a CIDR, an address inside it (longest prefix wins) and a
// name whose private answer is AAAA only.
var ipv6YAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: net6
    address: 2001:db8:100::/64
    network: corp
    ports: [tcp/5432, udp/5353]
    groups: [engineering]
  - name: host6
    address: 2001:db8:100::10
    network: corp
    ports: [tcp/22]
    groups: [engineering]
  - name: db6
    address: db6.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
  - name: app4
    address: 198.18.7.0/24
    network: corp
    ports: [tcp/80]
    groups: [engineering]
`

// recordingRouter remembers the last routes set on the TUN; with no6 it
// refuses IPv6 like a machine with IPv6 disabled.
type recordingRouter struct {
	mu     sync.Mutex
	no6    bool
	routes []netip.Prefix
}

func (r *recordingRouter) Set(addrs []netip.Prefix, routes []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.no6 {
		for _, p := range append(slices.Clone(addrs), routes...) {
			if p.Addr().Is6() {
				return fmt.Errorf("add address %s: permission denied (IPv6 disabled)", p)
			}
		}
	}
	r.routes = slices.Clone(routes)
	return nil
}
func (r *recordingRouter) Close() error { return nil }
func (r *recordingRouter) has(p string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.routes, netip.MustParsePrefix(p))
}

// ipv6Daemon signs alice in on a rootless TUN front-end (IPv6 on unless
// ipv4Only) whose connector dials through dial.
func ipv6Daemon(t *testing.T, ipv4Only, no6 bool, dial func(ctx context.Context, network, address string) (net.Conn, error)) (*TUNFrontend, *recordingRouter, *netstacktest.Host) {
	t.Helper()
	l := newLab(t, ipv6YAML)
	l.startConnectorWith("corp-a", staticResolver{"db6.corp.internal": "2001:db8:100::20"}, func(c *connector.Config) { c.Dial = dial })
	host, err := netstacktest.NewHost(netip.MustParseAddr("2001:db8:ffff::2"), 1280)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	fe := rootlessTUN(t, host)
	rr := &recordingRouter{no6: no6}
	fe.cfg.NewRouter = func(string) (platform.Router, error) { return rr, nil }
	fe.cfg.IPv4Only = ipv4Only
	d := newTestDaemon(t, fe)
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	testenv.Eventually(t, 10*time.Second, "the IPv4 resource routed", func() bool { return rr.has("198.18.7.0/24") })
	return fe, rr, host
}

// queryAAAA asks the front-end's DNS proxy for name's AAAA records.
func queryAAAA(t *testing.T, fe *TUNFrontend, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeAAAA)
	r, err := dns.Exchange(m, fe.pc.LocalAddr().String())
	if err != nil {
		t.Fatalf("AAAA %s: %v", name, err)
	}
	return r
}

// IPv6 is on by default: the IPv6 synthetic range and the IPv6 resources
// are routed, a name gets a synthetic AAAA, and TCP and UDP flows to IPv6
// addresses cross the TUN, the netstack, QUIC and the connector, which
// dials the IPv6 destination (for the AAAA-only name, the address its
// resolver gave).
func TestIPv6ResourcesThroughTUNByDefault(t *testing.T) {
	_, tcpPort := testenv.EchoTCP(t, "127.0.0.1:0")
	_, udpPort := testenv.EchoUDP(t, "127.0.0.1:0")
	dialed := make(chan string, 8)
	fe, rr, host := ipv6Daemon(t, false, false, func(ctx context.Context, network, address string) (net.Conn, error) {
		dialed <- network + " " + address
		port := tcpPort
		if network == "udp" {
			port = udpPort
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", itoa(int(port))))
	})
	for _, p := range []string{dnsproxy.DefaultV6Range.String(), "2001:db8:100::/64", "2001:db8:100::10/128"} {
		testenv.Eventually(t, 10*time.Second, "route "+p+" on the TUN", func() bool { return rr.has(p) })
	}

	r := queryAAAA(t, fe, "db6.corp.internal")
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("AAAA db6.corp.internal: rcode %s, answers %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	aaaa, _ := netip.AddrFromSlice(r.Answer[0].(*dns.AAAA).AAAA)
	if !dnsproxy.DefaultV6Range.Contains(aaaa) {
		t.Fatalf("AAAA db6.corp.internal = %s, not in the synthetic range %s", aaaa, dnsproxy.DefaultV6Range)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		dst  netip.AddrPort
		want string
	}{
		{netip.AddrPortFrom(aaaa, 5432), "tcp [2001:db8:100::20]:5432"},
		{netip.MustParseAddrPort("[2001:db8:100::10]:22"), "tcp [2001:db8:100::10]:22"},
		{netip.MustParseAddrPort("[2001:db8:100::77]:5432"), "tcp [2001:db8:100::77]:5432"},
	} {
		c, err := host.DialTCP(ctx, tc.dst)
		if err != nil {
			t.Fatalf("TCP to %s through the TUN: %v", tc.dst, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 5)
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("TCP echo via %s: %q %v", tc.dst, buf, err)
		}
		c.Close()
		if got := <-dialed; got != tc.want {
			t.Fatalf("connector dialed %q for %s, want %q", got, tc.dst, tc.want)
		}
	}
	// Port 22 is only allowed on host6: the CIDR does not widen it.
	if c, err := host.DialTCP(ctx, netip.MustParseAddrPort("[2001:db8:100::77]:22")); err == nil {
		c.Close()
		t.Fatal("tcp/22 to an address of the CIDR resource (which allows tcp/5432 only) was accepted")
	}

	udpEcho(t, host, "[2001:db8:100::99]:5353", "v6 datagram", "a UDP echo to an IPv6 CIDR resource")
	if got := <-dialed; got != "udp [2001:db8:100::99]:5353" {
		t.Fatalf("connector dialed %q, want udp [2001:db8:100::99]:5353", got)
	}
}

// With IPv4Only (posternd --ipv6=false) no IPv6 prefix is routed and AAAA
// queries for resource names get NODATA.
func TestIPv4OnlyRoutesNoIPv6(t *testing.T) {
	checkIPv4Only(t, true, false)
}

// On a machine that refuses IPv6 on the TUN, the default (IPv6 on) falls
// back to IPv4 only instead of failing to start.
func TestIPv6DisabledMachineFallsBackToIPv4(t *testing.T) {
	checkIPv4Only(t, false, true)
}

func checkIPv4Only(t *testing.T, ipv4Only, no6 bool) {
	fe, rr, _ := ipv6Daemon(t, ipv4Only, no6, func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError("none in this test")}
	})
	rr.mu.Lock()
	routes := slices.Clone(rr.routes)
	rr.mu.Unlock()
	for _, p := range routes {
		if p.Addr().Is6() {
			t.Errorf("IPv4Only routes %s on the TUN (routes %v)", p, routes)
		}
	}
	r := queryAAAA(t, fe, "db6.corp.internal")
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA db6.corp.internal with IPv4Only: rcode %s, answers %v; want NODATA", dns.RcodeToString[r.Rcode], r.Answer)
	}
}
