// Package policy holds the resource-matching rules shared by the controller
// (validation), the connector (enforcement on every flow) and the client (which
// resource a packet or a name belongs to): port and protocol specs, resource
// addresses (DNS name, wildcard, IP, CIDR) and the matching of a destination
// against them.
//
// Wildcards: "*.corp.internal" matches any name with one or more labels in place
// of "*" (a.corp.internal, a.b.corp.internal) and never the apex corp.internal
// itself. A "*" is only allowed as the whole leftmost label. Names compare
// case-insensitively and ignore one trailing dot.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Protocol names used in port specs.
const (
	TCP  = "tcp"
	UDP  = "udp"
	ICMP = "icmp"
)

// ProtoName names IP protocol number ipProto (what a flow header carries:
// 6, 17 or 1) as a port rule's protocol: TCP, UDP or ICMP, and "" for any
// other, which no port rule matches.
func ProtoName(ipProto byte) string {
	switch ipProto {
	case 6:
		return TCP
	case 17:
		return UDP
	case 1:
		return ICMP
	}
	return ""
}

// ErrSpec is wrapped by every parse error of this package.
var ErrSpec = errors.New("invalid spec")

// PortRule is one entry of a resource's port list: "tcp/22", "tcp/8000-8100",
// "udp/53", "tcp" (all TCP ports), "icmp".
type PortRule struct {
	Proto string
	From  uint16 // 0 with To 0 means all ports (or ICMP)
	To    uint16
}

// String renders the rule in its spec form.
func (r PortRule) String() string {
	switch {
	case r.Proto == ICMP:
		return ICMP
	case r.From == 0 && r.To == 0:
		return r.Proto
	case r.From == r.To:
		return fmt.Sprintf("%s/%d", r.Proto, r.From)
	}
	return fmt.Sprintf("%s/%d-%d", r.Proto, r.From, r.To)
}

// ParsePortRule parses one port spec.
func ParsePortRule(s string) (PortRule, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == ICMP {
		return PortRule{Proto: ICMP}, nil
	}
	proto, ports, hasPorts := strings.Cut(s, "/")
	if proto != TCP && proto != UDP {
		return PortRule{}, fmt.Errorf("%w: port %q: protocol must be tcp, udp or icmp", ErrSpec, s)
	}
	if !hasPorts {
		return PortRule{Proto: proto}, nil
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	from, err := parsePort(lo)
	if err != nil {
		return PortRule{}, fmt.Errorf("%w: port %q: %v", ErrSpec, s, err)
	}
	to := from
	if isRange {
		if to, err = parsePort(hi); err != nil {
			return PortRule{}, fmt.Errorf("%w: port %q: %v", ErrSpec, s, err)
		}
		if to < from {
			return PortRule{}, fmt.Errorf("%w: port %q: range end before start", ErrSpec, s)
		}
	}
	return PortRule{Proto: proto, From: from, To: to}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number 1-65535", s)
	}
	return uint16(n), nil
}

// ParsePortRules parses a list; an empty list means every TCP and UDP port and ICMP.
func ParsePortRules(specs []string) ([]PortRule, error) {
	out := make([]PortRule, 0, len(specs))
	for _, s := range specs {
		r, err := ParsePortRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Allows reports whether rules admit proto/port. An empty list admits all.
func Allows(rules []PortRule, proto string, port uint16) bool {
	if len(rules) == 0 {
		return true
	}
	for _, r := range rules {
		if r.Proto != proto {
			continue
		}
		if proto == ICMP || (r.From == 0 && r.To == 0) || (port >= r.From && port <= r.To) {
			return true
		}
	}
	return false
}

// AddressKind classifies a resource address.
type AddressKind int

const (
	KindName AddressKind = iota + 1
	KindWildcard
	KindIP
	KindCIDR
)

// Address is a parsed resource address.
type Address struct {
	Kind   AddressKind
	Name   string       // KindName: the name; KindWildcard: the suffix after "*." (both lowercase, no trailing dot)
	Prefix netip.Prefix // KindIP (a /32 or /128) and KindCIDR
}

// IsName reports whether the address is a DNS name or wildcard (served through
// synthetic addresses on the client).
func (a Address) IsName() bool { return a.Kind == KindName || a.Kind == KindWildcard }

// String renders the address in its spec form.
func (a Address) String() string {
	switch a.Kind {
	case KindName:
		return a.Name
	case KindWildcard:
		return "*." + a.Name
	case KindIP:
		return a.Prefix.Addr().String()
	}
	return a.Prefix.String()
}

// CanonicalName lowercases a DNS name and drops one trailing dot.
func CanonicalName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".")
}

// ParseAddress parses a resource address: a DNS name, "*.suffix", an IP or a CIDR.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Address{}, fmt.Errorf("%w: empty address", ErrSpec)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Address{}, fmt.Errorf("%w: address %q: bad CIDR: %v", ErrSpec, s, err)
		}
		if p.Masked() != p {
			return Address{}, fmt.Errorf("%w: address %q: host bits set (did you mean %s?)", ErrSpec, s, p.Masked())
		}
		return Address{Kind: KindCIDR, Prefix: p}, nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		ip = ip.Unmap()
		return Address{Kind: KindIP, Prefix: netip.PrefixFrom(ip, ip.BitLen())}, nil
	}
	n := CanonicalName(s)
	if _, err := netip.ParseAddr(n); err == nil {
		// "10.1.2.3." would otherwise be a DNS name that no flow to
		// 10.1.2.3 matches and that renders as the IP address.
		return Address{}, fmt.Errorf("%w: address %q: an IP address with a trailing dot; write %s", ErrSpec, s, n)
	}
	kind := KindName
	if strings.HasPrefix(n, "*.") {
		kind = KindWildcard
		n = n[2:]
	}
	if err := validName(n); err != nil {
		return Address{}, fmt.Errorf("%w: address %q: %v", ErrSpec, s, err)
	}
	return Address{Kind: kind, Name: n}, nil
}

func validName(n string) error {
	if len(n) > 253 {
		return errors.New("name longer than 253 characters")
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("empty or over-long label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("character %q not allowed in a DNS name (a * must be the whole first label)", c)
			}
		}
	}
	return nil
}

// MatchName reports whether the DNS name n is covered by a.
func (a Address) MatchName(n string) bool {
	n = CanonicalName(n)
	switch a.Kind {
	case KindName:
		return n == a.Name
	case KindWildcard:
		return len(n) > len(a.Name)+1 && strings.HasSuffix(n, "."+a.Name)
	}
	return false
}

// MatchAddr reports whether ip lies inside an IP or CIDR address.
func (a Address) MatchAddr(ip netip.Addr) bool {
	if a.Kind != KindIP && a.Kind != KindCIDR {
		return false
	}
	return a.Prefix.Contains(ip.Unmap())
}
