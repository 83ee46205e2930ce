package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseAddress: a parsed address renders to a spec that parses back to
// the same address; a name matches itself, a wildcard never its apex and
// always one more label; IP and CIDR addresses match no name.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"db.corp.internal", "*.corp.internal", "DB.Corp.Internal.", "10.0.0.0/8", "10.1.2.3",
		"2001:db8::/32", "::ffff:10.0.0.1", "fe80::1%eth0", "*.*.x", "a..b", "*", "*.", " x ", "10.0.0.1/8", "_srv._tcp.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if a != (Address{}) {
				t.Fatalf("error %v with a non-zero address %+v", err, a)
			}
			return
		}
		b, err := ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, a, a.String(), b, err)
		}
		switch a.Kind {
		case KindName:
			if !a.MatchName(strings.TrimSpace(s)) || !a.MatchName(strings.ToUpper(a.Name)+".") {
				t.Fatalf("%+v does not match its own name", a)
			}
		case KindWildcard:
			if a.MatchName(a.Name) || !a.MatchName("x."+a.Name) || !a.MatchName("x.y."+a.Name) {
				t.Fatalf("wildcard %+v: apex or one more label mismatched", a)
			}
			if a.MatchName("x" + a.Name) {
				t.Fatalf("wildcard %+v matches a look-alike without a dot boundary", a)
			}
		case KindIP, KindCIDR:
			if a.MatchName(s) || !a.Prefix.IsValid() || a.Prefix.Masked() != a.Prefix {
				t.Fatalf("address %+v", a)
			}
			if !a.MatchAddr(a.Prefix.Addr()) {
				t.Fatalf("%+v does not contain its own first address", a)
			}
			if a.Kind == KindIP && a.Prefix.Addr().Is4In6() {
				t.Fatalf("%+v keeps an IPv4-mapped address", a)
			}
		default:
			t.Fatalf("kind %d", a.Kind)
		}
		if a.IsName() && (len(a.Name) > 253 || a.Name == "") {
			t.Fatalf("name %q", a.Name)
		}
		_ = a.MatchAddr(netip.MustParseAddr("10.0.0.1"))
	})
}

// FuzzParsePortRule: a parsed rule renders to a spec that parses back to the
// same rule, and Allows agrees with the rule's range.
func FuzzParsePortRule(f *testing.F) {
	for _, s := range []string{"tcp/22", "udp/53", "tcp/8000-8100", "tcp", "ICMP", "icmp/3", "tcp/0", "tcp/65536", "tcp/10-1", "tcp/-", "udp/+5", " tcp/1 "} {
		f.Add(s, uint16(22))
	}
	f.Fuzz(func(t *testing.T, s string, port uint16) {
		r, err := ParsePortRule(s)
		if err != nil {
			return
		}
		back, err := ParsePortRule(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
		if r.Proto != ICMP && r.From > r.To {
			t.Fatalf("range %+v", r)
		}
		want := r.Proto == ICMP || (r.From == 0 && r.To == 0) || (port >= r.From && port <= r.To)
		if got := Allows([]PortRule{r}, r.Proto, port); got != want {
			t.Fatalf("Allows(%+v, %d) = %v", r, port, got)
		}
		other := TCP
		if r.Proto == TCP {
			other = UDP
		}
		if Allows([]PortRule{r}, other, port) {
			t.Fatalf("%+v allows %s", r, other)
		}
	})
}
