package lab

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func aaaas(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.AAAA); ok {
			out = append(out, a.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestDNS64(t *testing.T) {
	upstream := startDNS(t, DNSConfig{Zones: []string{"example.com"}, Records: map[string]string{
		"controller.example.com": "203.0.113.10",
		"dual.example.com":       "203.0.113.11,2001:db8:1::11",
	}})
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeDNS64(ctx, DNS64Config{Listen: "127.0.0.1:0", OnListen: func(a string) { addr <- a },
			Prefix: netip.MustParsePrefix("2001:db8:64::/96"), Upstream: upstream})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dns64: %v", err)
		}
	})
	var listen string
	select {
	case listen = <-addr:
	case err := <-done:
		done <- err
		t.Fatalf("dns64 did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("dns64 did not start within 10s")
	}
	if got := aaaas(query(t, listen, "controller.example.com", dns.TypeAAAA)); !slices.Equal(got, []string{"2001:db8:64::cb00:710a"}) {
		t.Errorf("AAAA of an IPv4-only name = %v, want the synthesized 2001:db8:64::cb00:710a", got)
	}
	if got := aaaas(query(t, listen, "dual.example.com", dns.TypeAAAA)); !slices.Equal(got, []string{"2001:db8:1::11"}) {
		t.Errorf("AAAA of a dual-stack name = %v, want only its own AAAA", got)
	}
	if got := aaaas(query(t, listen, "ipv4only.arpa", dns.TypeAAAA)); !slices.Equal(got, []string{"2001:db8:64::c000:aa", "2001:db8:64::c000:ab"}) {
		t.Errorf("AAAA of ipv4only.arpa = %v, want the prefix discovery answers", got)
	}
	if m := query(t, listen, "controller.example.com", dns.TypeA); len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "203.0.113.10" {
		t.Errorf("A query not passed through: %v", m.Answer)
	}
	if m := query(t, listen, "missing.example.com", dns.TypeAAAA); m.Rcode != dns.RcodeNameError {
		t.Errorf("AAAA of a missing name: rcode %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}
}

func TestDNS64BadConfig(t *testing.T) {
	for _, cfg := range []DNS64Config{
		{Listen: "127.0.0.1:0", Prefix: netip.MustParsePrefix("2001:db8:64::/64"), Upstream: "127.0.0.1:53"},
		{Listen: "127.0.0.1:0", Prefix: netip.MustParsePrefix("198.18.0.0/15"), Upstream: "127.0.0.1:53"},
		{Listen: "127.0.0.1:0", Prefix: netip.MustParsePrefix("2001:db8:64::/96"), Upstream: "resolver"},
		{Prefix: netip.MustParsePrefix("2001:db8:64::/96"), Upstream: "127.0.0.1:53"},
	} {
		if err := ServeDNS64(context.Background(), cfg); err == nil {
			t.Errorf("ServeDNS64(%+v) accepted a bad config", cfg)
		}
	}
}
