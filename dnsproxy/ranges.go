package dnsproxy

import (
	"fmt"
	"net/netip"
)

// Validation of synthetic ranges, shared by posternd (--range4/--range6,
// the IT preset) and the controller (the deployment's default ranges it
// pushes to clients), so both refuse the same ranges with the same words.

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

// ParseRange4 parses and checks a synthetic IPv4 range given as what (a flag
// or preset name, used in the error).
func ParseRange4(what, s string) (netip.Prefix, error) {
	p, err := parseRange(what, s)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %s: not an IPv4 prefix (the IPv6 range is set on its own)", what, s)
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
		return noneV6, fmt.Errorf("%s %s: not an IPv6 prefix (the IPv4 range is set on its own)", what, s)
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
