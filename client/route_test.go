package client

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

// fakeNames stands in for the DNS proxy's synthetic-address map.
type fakeNames map[netip.Addr][2]string

func (f fakeNames) Lookup(ip netip.Addr) (string, string, bool) {
	v, ok := f[ip]
	return v[0], v[1], ok
}

func testPolicy() *controlapi.ClientPolicy {
	return &controlapi.ClientPolicy{
		Revision: 7,
		Resources: []controlapi.PolicyResource{
			{ID: "r-wild", Name: "corp", Address: "*.corp.internal", Network: "corp", Ports: []string{"tcp/443"}},
			{ID: "r-deep", Name: "dev", Address: "*.dev.corp.internal", Network: "dev", Ports: []string{"tcp/22"}},
			{ID: "r-db", Name: "db", Address: "db.corp.internal", Network: "corp", Ports: []string{"tcp/5432", "icmp"}},
			{ID: "r-net", Name: "lan", Address: "10.1.0.0/16", Network: "corp"},
			{ID: "r-host", Name: "printer", Address: "10.1.2.3", Network: "office", Ports: []string{"tcp/631", "udp/161"}},
			{ID: "r-bad", Name: "broken", Address: "not a valid address!", Network: "corp"},
		},
		Connectors: []controlapi.ConnectorInfo{
			{ID: "c1", Name: "corp-a", Network: "corp", Online: true, Addrs: []string{"192.0.2.1:4433"}},
			{ID: "c2", Name: "corp-b", Network: "corp", Online: true, Addrs: []string{"192.0.2.2:4433"}},
			{ID: "c3", Name: "corp-c", Network: "corp", Online: false},
			{ID: "o1", Name: "office-a", Network: "office", Online: true},
		},
	}
}

func TestResolveHostMostSpecificWins(t *testing.T) {
	tb := buildRouteTable(testPolicy())
	cases := map[string]string{
		"db.corp.internal":    "r-db",
		"DB.Corp.Internal.":   "r-db",
		"wiki.corp.internal":  "r-wild",
		"a.b.corp.internal":   "r-wild",
		"x.dev.corp.internal": "r-deep",
		"dev.corp.internal":   "r-wild", // the apex of *.dev is not covered by it
		"corp.internal":       "",
		"example.org":         "",
		"10.1.2.3":            "r-host",
		"10.1.9.9":            "r-net",
		"10.2.0.1":            "",
		"::ffff:10.1.2.3":     "r-host",
	}
	for host, want := range cases {
		tgt, ok := tb.resolveHost(host, nil)
		got := ""
		if ok {
			got = tgt.res.ID
		}
		if got != want {
			t.Errorf("%s -> %q, want %q", host, got, want)
		}
	}
	if _, ok := tb.byID["r-bad"]; ok {
		t.Error("an unparsable resource was installed")
	}
	if got := tb.routes(); len(got) != 2 || got[0] != netip.MustParsePrefix("10.1.2.3/32") || got[1] != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("routes %v", got)
	}
}

func TestResolveSyntheticAddress(t *testing.T) {
	tb := buildRouteTable(testPolicy())
	names := fakeNames{
		netip.MustParseAddr("100.96.1.1"): {"db.corp.internal", "r-db"},
		netip.MustParseAddr("100.96.1.2"): {"git.corp.internal", "r-wild"},
		netip.MustParseAddr("100.96.1.3"): {"gone.corp.internal", "r-removed"},
		netip.MustParseAddr("100.96.1.4"): {"old.example.org", "r-removed"},
	}
	tgt, ok := tb.resolveAddr(netip.MustParseAddr("100.96.1.1"), names)
	if !ok || tgt.res.ID != "r-db" || tgt.dest != "db.corp.internal" {
		t.Errorf("synthetic db: %+v %v", tgt, ok)
	}
	tgt, ok = tb.resolveAddr(netip.MustParseAddr("100.96.1.2"), names)
	if !ok || tgt.res.ID != "r-wild" || tgt.dest != "git.corp.internal" {
		t.Errorf("synthetic wildcard: %+v %v", tgt, ok)
	}
	// A stale allocation whose resource id is gone still maps by name.
	if tgt, ok = tb.resolveAddr(netip.MustParseAddr("100.96.1.3"), names); !ok || tgt.res.ID != "r-wild" {
		t.Errorf("stale id, matching name: %+v %v", tgt, ok)
	}
	// ... but not when no resource covers the name any more.
	if _, ok = tb.resolveAddr(netip.MustParseAddr("100.96.1.4"), names); ok {
		t.Error("stale synthetic address of a removed resource resolved")
	}
	// The destination of an address resource is the textual IP.
	if tgt, ok = tb.resolveAddr(netip.MustParseAddr("10.1.4.4"), names); !ok || tgt.dest != "10.1.4.4" {
		t.Errorf("address resource: %+v %v", tgt, ok)
	}
}

func TestOpenFlowChecksPortsLocally(t *testing.T) {
	d := &Daemon{events: newBroadcaster()}
	d.table.Store(buildRouteTable(testPolicy()))
	tgt, _ := d.table.Load().resolveHost("db.corp.internal", nil)
	start := time.Now()
	_, err := d.openFlow(context.Background(), tgt, wire.ProtoTCP, 22)
	var fe *FlowError
	if !errors.As(err, &fe) || fe.Status != wire.StatusDenied || !errors.Is(err, ErrPortNotAllowed) {
		t.Fatalf("port outside policy: %v", err)
	}
	if time.Since(start) > 10*time.Millisecond {
		t.Errorf("local refusal took %v", time.Since(start))
	}
	// Allowed port but the tunnel is down: unreachable, no panic.
	_, err = d.openFlow(context.Background(), tgt, wire.ProtoTCP, 5432)
	if !errors.As(err, &fe) || fe.Status != wire.StatusUnreachable || !errors.Is(err, ErrDown) {
		t.Fatalf("tunnel down: %v", err)
	}
	// ICMP allowed on db; UDP not.
	if _, err = d.openFlow(context.Background(), tgt, wire.ProtoUDP, 53); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("udp/53 on db: %v", err)
	}
}

func TestOpenFlowNoConnector(t *testing.T) {
	d := &Daemon{events: newBroadcaster(), log: testenv.Logger(t)}
	p := testPolicy()
	p.Connectors = p.Connectors[2:3] // only an offline one
	d.table.Store(buildRouteTable(p))
	d.pool = newPool(nil, nil, d.log, nil)
	defer d.pool.close()
	tgt, _ := d.table.Load().resolveHost("db.corp.internal", nil)
	_, err := d.openFlow(context.Background(), tgt, wire.ProtoTCP, 5432)
	if !errors.Is(err, ErrNoConnector) {
		t.Fatalf("no online connector: %v", err)
	}
}

func TestCandidateOrder(t *testing.T) {
	p := newPool(nil, nil, testenv.Logger(t), nil)
	defer p.close()
	cs := testPolicy().Connectors
	corp := []controlapi.ConnectorInfo{cs[0], cs[1], cs[2]}
	// corp-a failed a moment ago: corp-b first; the offline corp-c never.
	p.entry(cs[0]).failedAt = time.Now()
	got := p.candidates(corp)
	if len(got) != 2 || got[0].id != "c2" || got[1].id != "c1" {
		t.Fatalf("order %v", ids(got))
	}
	// Load: many active flows on corp-b make corp-a preferable again once
	// its failure is old.
	p.entry(cs[0]).failedAt = time.Now().Add(-time.Minute)
	p.entry(cs[1]).active.Store(200)
	if got = p.candidates(corp); got[0].id != "c1" {
		t.Fatalf("load order %v", ids(got))
	}
	// Load reported by the controller counts too.
	p.entry(cs[1]).active.Store(0)
	hot := cs[0]
	hot.Load.ActiveFlows = 2000
	if got = p.candidates([]controlapi.ConnectorInfo{hot, cs[1]}); got[0].id != "c2" {
		t.Fatalf("reported load order %v", ids(got))
	}
}

func ids(es []*connEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.id)
	}
	return out
}

// IPv6 address and CIDR resources: longest prefix first, routed as their
// prefixes; synthetic IPv6 addresses map back to their names; an
// IPv4-mapped IPv6 address is its IPv4 address.
func TestRouteTableIPv6(t *testing.T) {
	tb := buildRouteTable(&controlapi.ClientPolicy{Resources: []controlapi.PolicyResource{
		{ID: "r-net6", Name: "net6", Address: "2001:db8:100::/64", Network: "corp"},
		{ID: "r-wide6", Name: "wide6", Address: "2001:db8::/32", Network: "corp"},
		{ID: "r-host6", Name: "host6", Address: "2001:db8:100::10", Network: "office"},
		{ID: "r-db6", Name: "db6", Address: "db6.corp.internal", Network: "corp"},
		{ID: "r-net4", Name: "net4", Address: "198.18.7.0/24", Network: "corp"},
	}})
	names := fakeNames{netip.MustParseAddr("fd7a:7073:746e::1:5"): {"db6.corp.internal", "r-db6"}}
	for _, c := range []struct{ ip, res, dest string }{
		{"2001:db8:100::10", "host6", "2001:db8:100::10"},
		{"2001:db8:100::11", "net6", "2001:db8:100::11"},
		{"2001:db8:ffff::1", "wide6", "2001:db8:ffff::1"},
		{"fd7a:7073:746e::1:5", "db6", "db6.corp.internal"},
		{"::ffff:198.18.7.9", "net4", "198.18.7.9"},
	} {
		tgt, ok := tb.resolveAddr(netip.MustParseAddr(c.ip), names)
		if !ok || tgt.res.Name != c.res || tgt.dest != c.dest {
			t.Errorf("resolveAddr(%s) = %v %+v, want %s %s", c.ip, ok, tgt, c.res, c.dest)
		}
	}
	for _, ip := range []string{"2001:db9::1", "fd7a:7073:746e::1:6", "::1"} {
		if tgt, ok := tb.resolveAddr(netip.MustParseAddr(ip), names); ok {
			t.Errorf("resolveAddr(%s) = %s, want no resource", ip, tgt.res.Name)
		}
	}
	if tgt, ok := tb.resolveHost("2001:db8:100::10", names); !ok || tgt.res.Name != "host6" {
		t.Errorf("resolveHost of an IPv6 literal = %v %+v", ok, tgt)
	}
	want := map[netip.Prefix]bool{}
	for _, p := range []string{"2001:db8:100::10/128", "2001:db8:100::/64", "2001:db8::/32", "198.18.7.0/24"} {
		want[netip.MustParsePrefix(p)] = true
	}
	got := tb.routes()
	if len(got) != len(want) {
		t.Fatalf("routes %v, want %v", got, want)
	}
	for _, p := range got {
		if !want[p] {
			t.Errorf("unexpected route %s (routes %v)", p, got)
		}
	}
}
