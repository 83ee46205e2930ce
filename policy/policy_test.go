package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/wire"
)

func TestParsePortRule(t *testing.T) {
	good := map[string]PortRule{
		"tcp/22":        {TCP, 22, 22},
		"TCP/8000-8100": {TCP, 8000, 8100},
		"udp/53":        {UDP, 53, 53},
		"icmp":          {Proto: ICMP},
		"udp":           {Proto: UDP},
	}
	for in, want := range good {
		got, err := ParsePortRule(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v %v want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "sctp/1", "tcp/0", "tcp/65536", "tcp/x", "tcp/100-10", "tcp/1-", "icmp/3"} {
		if _, err := ParsePortRule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAllows(t *testing.T) {
	rules, err := ParsePortRules([]string{"tcp/22", "tcp/8000-8100", "udp/53", "icmp"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		proto string
		port  uint16
		want  bool
	}{
		{TCP, 22, true}, {TCP, 23, false}, {TCP, 8050, true}, {TCP, 8101, false},
		{UDP, 53, true}, {UDP, 22, false}, {ICMP, 0, true},
	} {
		if got := Allows(rules, c.proto, c.port); got != c.want {
			t.Errorf("%s/%d = %v", c.proto, c.port, got)
		}
	}
	if !Allows(nil, TCP, 1) {
		t.Error("empty list must allow all")
	}
	tcpOnly, _ := ParsePortRules([]string{"tcp"})
	if !Allows(tcpOnly, TCP, 65535) || Allows(tcpOnly, UDP, 53) || Allows(tcpOnly, ICMP, 0) {
		t.Error("tcp-all rule wrong")
	}
}

func TestAddressMatching(t *testing.T) {
	mustAddr := func(s string) Address {
		a, err := ParseAddress(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return a
	}
	name := mustAddr("DB.corp.internal.")
	wild := mustAddr("*.corp.internal")
	ip := mustAddr("198.51.100.20")
	cidr := mustAddr("198.18.10.0/24")
	v6 := mustAddr("2001:db8::/32")

	names := []struct {
		a    Address
		n    string
		want bool
	}{
		{name, "db.corp.internal", true},
		{name, "db.corp.internal.", true},
		{name, "DB.CORP.INTERNAL", true},
		{name, "x.db.corp.internal", false},
		{wild, "web.corp.internal", true},
		{wild, "a.b.corp.internal", true}, // * spans one or more labels
		{wild, "corp.internal", false},    // never the apex
		{wild, "evilcorp.internal", false},
		{wild, "web.corp.internal.evil.com", false},
		{wild, "corp.internal.evil", false},
		{ip, "198.51.100.20", false},
	}
	for _, c := range names {
		if got := c.a.MatchName(c.n); got != c.want {
			t.Errorf("%s matches %q = %v", c.a, c.n, got)
		}
	}
	addrs := []struct {
		a    Address
		ip   string
		want bool
	}{
		{ip, "198.51.100.20", true},
		{ip, "198.51.100.21", false},
		{cidr, "198.18.10.200", true},
		{cidr, "198.18.11.1", false},
		{cidr, "::ffff:198.18.10.1", true},
		{v6, "2001:db8::5", true},
		{name, "198.51.100.20", false},
	}
	for _, c := range addrs {
		if got := c.a.MatchAddr(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("%s contains %s = %v", c.a, c.ip, got)
		}
	}
	for _, bad := range []string{"", "198.18.10.1/24", "10.0.0.0/33", "a..b", "*foo.corp", "foo.*.corp", "bad_char!.x"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if mustAddr("*.corp.internal").String() != "*.corp.internal" || !wild.IsName() || cidr.IsName() {
		t.Error("String/IsName wrong")
	}
}

// TestIPWithTrailingDotRefused: found by FuzzParseAddress ("0.0.0.0." was a
// DNS name that rendered as an IP address).
func TestIPWithTrailingDotRefused(t *testing.T) {
	for _, s := range []string{"0.0.0.0.", "10.1.2.3.", "2001:db8::1."} {
		if a, err := ParseAddress(s); err == nil {
			t.Errorf("%q parsed as %+v, want an error", s, a)
		} else if !strings.Contains(err.Error(), "trailing dot") {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{"12h": 12 * time.Hour, "30d": 30 * 24 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute, "2s": 2 * time.Second}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0h", "-1h", "1.5d", "12", "d", "forever"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
	for d, want := range map[time.Duration]string{12 * time.Hour: "12h", 30 * 24 * time.Hour: "30d", 90 * time.Minute: "1h30m", 2 * time.Second: "2s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestProtoName: the protocol numbers flow headers carry name the port
// rules' protocols, and any other number matches no rule.
func TestProtoName(t *testing.T) {
	for p, want := range map[byte]string{wire.ProtoTCP: TCP, wire.ProtoUDP: UDP, wire.ProtoICMP: ICMP, 0: "", 41: "", 58: ""} {
		if got := ProtoName(p); got != want {
			t.Errorf("ProtoName(%d) = %q, want %q", p, got, want)
		}
	}
	rules, err := ParsePortRules([]string{"tcp", "udp", "icmp"})
	if err != nil {
		t.Fatal(err)
	}
	if Allows(rules, ProtoName(47), 0) {
		t.Error("an unknown protocol number passed rules naming every protocol")
	}
}
