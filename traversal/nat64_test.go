package traversal

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
)

func TestPrefixFromAAAA(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"2001:db8:64::c000:aa"}, "2001:db8:64::/96"},
		{[]string{"2001:db8:1::5", "2001:db8:64::c000:ab"}, "2001:db8:64::/96"},
		{[]string{"2001:db8:64::c000:ac"}, ""}, // 192.0.0.172 is not a well-known address
		{[]string{"::ffff:192.0.0.170"}, ""},   // v4-mapped is no NAT64 prefix
		{nil, ""},
	} {
		var addrs []netip.Addr
		for _, s := range tc.in {
			addrs = append(addrs, netip.MustParseAddr(s))
		}
		p, ok := prefixFromAAAA(addrs)
		if tc.want == "" {
			if ok {
				t.Errorf("%v: got prefix %v, want none", tc.in, p)
			}
			continue
		}
		if !ok || p.String() != tc.want {
			t.Errorf("%v: got %v %v, want %s", tc.in, p, ok, tc.want)
		}
	}
}

// An IPv6-only host rewrites IPv4 literals into the discovered prefix; a
// host with an IPv4 route, or without a NAT64, keeps them.
func TestNAT64Translate(t *testing.T) {
	lookups := 0
	dns64 := func(context.Context, string) ([]netip.Addr, error) {
		lookups++
		return []netip.Addr{netip.MustParseAddr("2001:db8:64::c000:aa")}, nil
	}
	noDNS64 := func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
	v6only := func(netip.Addr) bool { return false }
	dual := func(netip.Addr) bool { return true }
	ctx := context.Background()

	n := &nat64{lookup: dns64, hasRoute4: v6only}
	if _, ok := n.cached(); ok {
		t.Fatal("prefix known before any discovery")
	}
	if got := n.translate(ctx, "203.0.113.20:3478", false); got != "203.0.113.20:3478" {
		t.Fatalf("translated %s without a discovered prefix", got)
	}
	if got, want := n.translate(ctx, "203.0.113.20:3478", true), "[2001:db8:64::cb00:7114]:3478"; got != want {
		t.Fatalf("translate = %s, want %s", got, want)
	}
	if got, want := n.translate(ctx, "203.0.113.20:443", true), "[2001:db8:64::cb00:7114]:443"; got != want || lookups != 1 {
		t.Fatalf("translate = %s (lookups %d), want %s from the cached prefix", got, lookups, want)
	}
	for _, keep := range []string{"[2001:db8:1::20]:3478", "relay.example.com:3478", "garbage"} {
		if got := n.translate(ctx, keep, true); got != keep {
			t.Errorf("translate(%s) = %s, want it unchanged", keep, got)
		}
	}
	ua := n.translateUDP(&net.UDPAddr{IP: net.ParseIP("203.0.113.200"), Port: 5000})
	if ua.String() != "[2001:db8:64::cb00:71c8]:5000" {
		t.Fatalf("translateUDP = %v", ua)
	}

	if got := (&nat64{lookup: dns64, hasRoute4: dual}).translate(ctx, "203.0.113.20:3478", true); got != "203.0.113.20:3478" {
		t.Fatalf("dual-stack host translated to %s", got)
	}
	if got := (&nat64{lookup: noDNS64, hasRoute4: v6only}).translate(ctx, "203.0.113.20:3478", true); got != "203.0.113.20:3478" {
		t.Fatalf("host without DNS64 translated to %s", got)
	}
}

// A connector on an IPv6-only network links to relays at their NAT64
// addresses (the relay set comes from the controller as IPv4 literals).
func TestConnectorAgentTranslatesRelaysOnIPv6Only(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal("no IPv6 loopback:", err)
	}
	defer udp.Close()
	a, err := NewConnectorAgent(ConnectorAgentConfig{Transport: &quic.Transport{Conn: udp}, Certificate: func() (*tls.Certificate, error) { return &tls.Certificate{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	a.nat64 = &nat64{
		lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("2001:db8:64::c000:aa")}, nil
		},
		hasRoute4: func(netip.Addr) bool { return false },
	}
	a.SetRelays([]controlapi.RelayInfo{{ID: "r1", Online: true, UDPAddr: "203.0.113.20:3478", TLSAddr: "203.0.113.20:443", TLSCertSHA256: "00"}})
	a.mu.Lock()
	got := a.relays["r1"].info
	a.mu.Unlock()
	if got.UDPAddr != "[2001:db8:64::cb00:7114]:3478" || got.TLSAddr != "[2001:db8:64::cb00:7114]:443" {
		t.Fatalf("relay at %s / %s, want the NAT64 addresses", got.UDPAddr, got.TLSAddr)
	}
	// The same set again changes nothing (no relink).
	a.SetRelays([]controlapi.RelayInfo{{ID: "r1", Online: true, UDPAddr: "203.0.113.20:3478", TLSAddr: "203.0.113.20:443", TLSCertSHA256: "00"}})
	a.mu.Lock()
	same := a.relays["r1"].info == got
	a.mu.Unlock()
	if !same {
		t.Fatal("an unchanged relay set relinked")
	}
}
