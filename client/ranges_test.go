package client

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/installer/preset"
)

func TestResolveRanges(t *testing.T) {
	r, err := ResolveRanges("", "", preset.Preset{})
	if err != nil || r.V4 != dnsproxy.DefaultV4Range || r.V6 != dnsproxy.DefaultV6Range || r.V4Source != "default" {
		t.Fatalf("defaults: %+v %v", r, err)
	}
	p := preset.Preset{Range4: "10.77.0.0/16", Range6: "fd12:3456:789a::/48"}
	r, err = ResolveRanges("", "", p)
	if err != nil || r.V4.String() != "10.77.0.0/16" || r.V6.String() != "fd12:3456:789a::/48" || !strings.Contains(r.V4Source, preset.EnvRange4) {
		t.Fatalf("preset: %+v %v", r, err)
	}
	r, err = ResolveRanges("198.18.64.0/20", "2001:db8:77::/48", p)
	if err != nil || r.V4.String() != "198.18.64.0/20" || r.V6.String() != "2001:db8:77::/48" || r.V4Source != "--range4" || r.V6Source != "--range6" {
		t.Fatalf("flags over preset: %+v %v", r, err)
	}
	// A bad preset is named as the preset, a bad flag as the flag.
	if _, err := ResolveRanges("", "", preset.Preset{Range4: "8.8.0.0/16"}); err == nil || !strings.Contains(err.Error(), preset.EnvRange4) {
		t.Errorf("bad preset: %v", err)
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, c := range []struct {
		v6   bool
		in   string
		want string // in the error; "" = valid
	}{
		{false, "100.96.0.0/12", ""},
		{false, "10.0.0.0/8", ""},
		{false, "192.168.100.0/22", ""},
		{false, "100.96.0.0", "not a CIDR prefix"},
		{false, "fd7a:7073:746e::/48", "not an IPv4 prefix"},
		{false, "100.96.0.1/12", "did you mean 100.96.0.0/12"},
		{false, "100.96.0.0/24", "want a /8 to /22"},
		{false, "0.0.0.0/0", "want a /8 to /22"},
		{false, "8.8.0.0/16", "not private address space"},
		{false, "10.0.0.0/7", "want a /8 to /22"},
		{true, "fd7a:7073:746e::/48", ""},
		{true, "2001:db8:1::/48", ""},
		{true, "100.96.0.0/12", "not an IPv6 prefix"},
		{true, "::ffff:100.96.0.0/108", "not an IPv6 prefix"},
		{true, "2600::/48", "not a unique local"},
		{true, "fd00::/16", "want a /32 to /112"},
		{true, "fd00::/120", "want a /32 to /112"},
		{true, "fd00::1/48", "host bits"},
	} {
		flag := "--range4"
		parse := dnsproxy.ParseRange4
		if c.v6 {
			flag, parse = "--range6", dnsproxy.ParseRange6
		}
		p, err := parse(flag, c.in)
		switch {
		case c.want == "" && (err != nil || p.String() != c.in):
			t.Errorf("%s %s: %v %v, want valid", flag, c.in, p, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), flag)):
			t.Errorf("%s %s: err %v, want one starting with %s and containing %q", flag, c.in, err, flag, c.want)
		}
	}
}

func TestCheckRangesAtStart(t *testing.T) {
	var got []netip.Prefix
	var gotIf string
	conflict := errors.New("100.96.0.0/12 overlaps route 100.96.0.0/16 dev eth1")
	tc := TUNConfig{Name: "pst9", IPv4Only: true, CheckRangeConflicts: func(r []netip.Prefix, ifName string) error {
		got, gotIf = r, ifName
		return conflict
	}}
	err := checkRangesAtStart(tc)
	if !errors.Is(err, conflict) || !strings.Contains(err.Error(), "--range4") {
		t.Errorf("conflict not reported with the flags named: %v", err)
	}
	if len(got) != 1 || got[0] != dnsproxy.DefaultV4Range || gotIf != "pst9" {
		t.Errorf("checked %v on %q, want the default IPv4 range excepting pst9", got, gotIf)
	}
	// IPv6 is on by default: both default ranges are checked.
	tc.IPv4Only = false
	_ = checkRangesAtStart(tc)
	if len(got) != 2 || got[0] != dnsproxy.DefaultV4Range || got[1] != dnsproxy.DefaultV6Range {
		t.Errorf("checked %v by default, want both default ranges", got)
	}
	tc.V4Range, tc.V6Range = netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("fd01::/48")
	_ = checkRangesAtStart(tc)
	if len(got) != 2 || got[0] != tc.V4Range || got[1] != tc.V6Range {
		t.Errorf("checked %v, want both configured ranges", got)
	}
}
