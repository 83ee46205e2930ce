package dnsproxy

import (
	"net/netip"
	"slices"
	"testing"

	"postern.dev/postern/controlapi"
)

func TestMatch(t *testing.T) {
	rs := []controlapi.PolicyResource{
		res("r1", "db", "db.corp.internal", "corp"),
		res("r2", "corp-all", "*.corp.internal", "corp"),
		res("r3", "k8s", "*.k8s.corp.internal", "corp"),
		res("r4", "lab", "10.1.2.0/24", "lab"),
		{ID: "r5", Name: "git", Address: "git.corp.internal", Alias: "git.example.test", Network: "corp"},
		{ID: "r6", Name: "printer", Address: "10.9.9.9", Alias: "printer.corp.test", Network: "lab"},
		{ID: "r7", Name: "bad", Address: "not a name!", Network: "corp"},
		{ID: "r8", Name: "cidr-alias", Address: "10.8.0.0/16", Alias: "net.corp.test", Network: "lab"},
	}
	tb := buildTable(rs, quiet)
	tests := []struct {
		name    string
		want    string // resource ID, "" for none
		pattern string
	}{
		{"db.corp.internal", "r1", "db.corp.internal"}, // exact beats wildcard
		{"DB.Corp.Internal", "r1", "db.corp.internal"}, // case-insensitive (canonicalised by caller)
		{"a.corp.internal", "r2", "*.corp.internal"},   // one label
		{"a.b.corp.internal", "r2", "*.corp.internal"}, // several labels
		{"corp.internal", "", ""},                      // never the apex
		{"x.db.corp.internal", "r2", "*.corp.internal"},
		{"svc.k8s.corp.internal", "r3", "*.k8s.corp.internal"}, // longer suffix wins
		{"a.b.k8s.corp.internal", "r3", "*.k8s.corp.internal"},
		{"k8s.corp.internal", "r2", "*.corp.internal"}, // apex of k8s is below *.corp.internal
		{"corp.internal.evil.test", "", ""},
		{"xcorp.internal", "", ""}, // suffix must be on a label boundary
		{"internal", "", ""},
		{"git.example.test", "r5", "git.example.test"},
		{"printer.corp.test", "r6", "printer.corp.test"},
		{"net.corp.test", "", ""}, // alias of a CIDR makes no sense
		{"10.1.2.3", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		r := tb.match(canonicalForTest(tt.name))
		got, pat := "", ""
		if r != nil {
			got, pat = r.res.ID, r.pattern
		}
		if got != tt.want || pat != tt.pattern {
			t.Errorf("match(%q) = %q %q, want %q %q", tt.name, got, pat, tt.want, tt.pattern)
		}
	}
	if r := tb.match("git.example.test"); r.dialName("git.example.test") != "git.corp.internal" {
		t.Errorf("alias dial name = %q", r.dialName("git.example.test"))
	}
	if r := tb.match("printer.corp.test"); r.fixed != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("IP alias fixed = %v", r.fixed)
	}
	wantDomains := []string{"corp.internal", "git.example.test", "printer.corp.test"}
	if got := tb.domains(); !slices.Equal(got, wantDomains) {
		t.Errorf("domains = %v, want %v", got, wantDomains)
	}
}

func canonicalForTest(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

func TestDuplicateNamesDeterministic(t *testing.T) {
	a := res("b-id", "second", "db.corp.internal", "corp")
	b := res("a-id", "first", "db.corp.internal", "corp")
	for _, order := range [][]controlapi.PolicyResource{{a, b}, {b, a}} {
		if got := buildTable(order, quiet).match("db.corp.internal").res.ID; got != "a-id" {
			t.Errorf("winner = %s, want a-id (smallest ID, whatever the order)", got)
		}
	}
}

func TestReverseZones(t *testing.T) {
	z := reverseZones(netip.MustParsePrefix("100.96.0.0/12"))
	if len(z) != 16 || z[0] != "96.100.in-addr.arpa" || z[15] != "111.100.in-addr.arpa" {
		t.Errorf("v4 zones = %v", z)
	}
	if z := reverseZones(netip.MustParsePrefix("10.0.0.0/8")); !slices.Equal(z, []string{"10.in-addr.arpa"}) {
		t.Errorf("/8 zones = %v", z)
	}
	if z := reverseZones(netip.MustParsePrefix("fd7a:7073:746e::/48")); !slices.Equal(z, []string{"e.6.4.7.3.7.0.7.a.7.d.f.ip6.arpa"}) {
		t.Errorf("v6 zones = %v", z)
	}
	if z := reverseZones(netip.MustParsePrefix("fd00::/46")); len(z) != 4 || z[3] != "3.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa" {
		t.Errorf("/46 zones = %v", z)
	}
}

func TestParseReverse(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"5.0.96.100.in-addr.arpa", "100.96.0.5"},
		{"1.2.3.in-addr.arpa", ""},
		{"x.0.96.100.in-addr.arpa", ""},
		{"300.0.96.100.in-addr.arpa", ""},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.6.4.7.3.7.0.7.a.7.d.f.ip6.arpa", "fd7a:7073:746e::1"},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.6.4.7.3.7.0.7.a.7.d.f.ip6.arpa", ""},
		{"1.0.ip6.arpa", ""},
		{"example.com", ""},
	}
	for _, tt := range tests {
		a, ok := parseReverse(tt.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("parseReverse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
