package client

import (
	"fmt"
	"net/netip"

	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
	"postern.dev/postern/platform"
)

// Synthetic address ranges: the DNS proxy answers resource names with
// addresses from these prefixes, routed to the TUN device. The admin picks
// them with posternd --range4/--range6 or the IT preset (POSTERN_RANGE4 and
// POSTERN_RANGE6); the defaults are dnsproxy's.

// Range size limits: the first /24 (IPv4) and /120 (IPv6) of a range are
// reserved for the DNS proxy, and a range much larger than needed only
// takes address space away from the machine's networks.
const (
	minRange4Bits = 8   // at most a /8
	maxRange4Bits = 22  // at least a /22
	minRange6Bits = 32  // at most a /32
	maxRange6Bits = 112 // at least a /112
)

// Where a synthetic IPv4 range may come from: private, shared (CGNAT) and
// benchmarking space. Anything else is somebody's public network, whose real
// hosts the synthetic addresses would hide.
var privateV4 = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
}

// IPv6: unique local addresses, or the documentation prefix (labs, tests).
var (
	ulaV6  = netip.MustParsePrefix("fc00::/7")
	docV6  = netip.MustParsePrefix("2001:db8::/32")
	noneV6 = netip.Prefix{}
)

// SyntheticRanges are the synthetic ranges posternd uses and where each was
// set ("--range4", "POSTERN_RANGE4 (preset)", "default").
type SyntheticRanges struct {
	V4, V6             netip.Prefix
	V4Source, V6Source string
}

// ResolveRanges picks each range from its flag, else the preset, else the
// default, and validates it; an error names the flag or preset variable.
func ResolveRanges(flag4, flag6 string, p preset.Preset) (SyntheticRanges, error) {
	var r SyntheticRanges
	var err error
	r.V4Source, r.V4, err = pickRange("--range4", flag4, preset.EnvRange4+" (preset)", p.Range4, dnsproxy.DefaultV4Range, ParseRange4)
	if err != nil {
		return r, err
	}
	r.V6Source, r.V6, err = pickRange("--range6", flag6, preset.EnvRange6+" (preset)", p.Range6, dnsproxy.DefaultV6Range, ParseRange6)
	return r, err
}

func pickRange(flagName, flagVal, presetName, presetVal string, def netip.Prefix, parse func(string, string) (netip.Prefix, error)) (string, netip.Prefix, error) {
	switch {
	case flagVal != "":
		p, err := parse(flagName, flagVal)
		return flagName, p, err
	case presetVal != "":
		p, err := parse(presetName, presetVal)
		return presetName, p, err
	}
	return "default", def, nil
}

// ParseRange4 parses and checks a synthetic IPv4 range given as what (a flag
// or preset name, used in the error).
func ParseRange4(what, s string) (netip.Prefix, error) {
	p, err := parseRange(what, s)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %s: not an IPv4 prefix (the IPv6 range is --range6)", what, s)
	}
	if p.Bits() < minRange4Bits || p.Bits() > maxRange4Bits {
		return netip.Prefix{}, fmt.Errorf("%s %s: a /%d; want a /%d to /%d (the first /24 is reserved for the DNS proxy)", what, s, p.Bits(), minRange4Bits, maxRange4Bits)
	}
	if !within(p, privateV4...) {
		return netip.Prefix{}, fmt.Errorf("%s %s: not private address space, so it would hide real hosts; use a range inside 100.64.0.0/10, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 198.18.0.0/15", what, s)
	}
	return p, nil
}

// ParseRange6 parses and checks a synthetic IPv6 range.
func ParseRange6(what, s string) (netip.Prefix, error) {
	p, err := parseRange(what, s)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return noneV6, fmt.Errorf("%s %s: not an IPv6 prefix (the IPv4 range is --range4)", what, s)
	}
	if p.Bits() < minRange6Bits || p.Bits() > maxRange6Bits {
		return noneV6, fmt.Errorf("%s %s: a /%d; want a /%d to /%d (a ULA /48 such as fd7a:7073:746e::/48 is usual)", what, s, p.Bits(), minRange6Bits, maxRange6Bits)
	}
	if !within(p, ulaV6, docV6) {
		return noneV6, fmt.Errorf("%s %s: not a unique local (fc00::/7) or documentation (2001:db8::/32) prefix, so it would hide real hosts", what, s)
	}
	return p, nil
}

func parseRange(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q: not a CIDR prefix (e.g. 100.96.0.0/12 or fd7a:7073:746e::/48)", what, s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s %s: a range has no zone", what, s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s %s: host bits set (did you mean %s?)", what, s, p.Masked())
	}
	return p, nil
}

func within(p netip.Prefix, outer ...netip.Prefix) bool {
	for _, o := range outer {
		if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// checkRangesAtStart refuses, when posternd starts in TUN mode, synthetic
// ranges that overlap a route or address already on the machine (naming
// both), instead of failing later at `postern up`. Entries on the daemon's
// own device (left by a crashed run) do not count.
func checkRangesAtStart(tc TUNConfig) error {
	v4, v6 := tc.V4Range, tc.V6Range
	if !v4.IsValid() {
		v4 = dnsproxy.DefaultV4Range
	}
	if !v6.IsValid() {
		v6 = dnsproxy.DefaultV6Range
	}
	ranges := []netip.Prefix{v4}
	if !tc.IPv4Only {
		ranges = append(ranges, v6)
	}
	check := tc.CheckRangeConflicts
	if check == nil {
		check = platform.CheckRangeConflictsExcept
	}
	if err := check(ranges, tc.Name); err != nil {
		return fmt.Errorf("synthetic address range (--range4/--range6): %w", err)
	}
	return nil
}

// describeAddressing adds the traffic mode and the synthetic ranges in use
// to a DNS explanation (postern dns).
func (d *Daemon) describeAddressing(ex *localapi.DNSExplain) {
	d.mu.Lock()
	fe := d.front
	d.mu.Unlock()
	if fe == nil {
		ex.Mode = "down"
		return
	}
	var st localapi.Status
	fe.Describe(&st)
	switch {
	case st.TUN != "":
		ex.Mode = "tun"
		ex.Ranges = st.Ranges
	case st.SOCKS5 != "":
		ex.Mode = "socks5"
		if ex.Resource != "" {
			ex.Note = "SOCKS5 mode: the name goes to the connector as is (use socks5h:// or --socks5-hostname) and is resolved inside the private network; no synthetic address"
		}
	}
}
