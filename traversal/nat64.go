package traversal

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// NAT64 (RFC 6146) lets an IPv6-only host reach IPv4 addresses through a
// translator at a /96 prefix; DNS64 (RFC 6147) synthesizes AAAA records for
// names, but the controller hands out relays and connector candidates as
// IPv4 literals, which no resolver sees. Like a CLAT-less application on an
// IPv6-only network (RFC 7050, RFC 8305 section 7.1), the client discovers
// the prefix by resolving ipv4only.arpa and synthesizes the IPv6 address of
// an IPv4 literal itself, and only when this host has no IPv4 route to it.

// ipv4OnlyName is the well-known name whose only A records are
// ipv4OnlyAddrs; a DNS64 answers its AAAA query with those embedded in its
// prefix (RFC 7050).
const ipv4OnlyName = "ipv4only.arpa"

var ipv4OnlyAddrs = []netip.Addr{netip.MustParseAddr("192.0.0.170"), netip.MustParseAddr("192.0.0.171")}

// nat64Recheck is how long a discovery (found or not) is trusted: networks
// change under a laptop.
const nat64Recheck = 30 * time.Second

// nat64 discovers and caches the network's NAT64 prefix.
type nat64 struct {
	lookup func(ctx context.Context, host string) ([]netip.Addr, error) // AAAA lookup
	// hasRoute4 reports whether this host can send to an IPv4 address.
	hasRoute4 func(ip netip.Addr) bool

	mu      sync.Mutex
	prefix  netip.Prefix // invalid when none was found
	checked time.Time
}

// defaultNAT64 uses the system resolver and routing table.
var defaultNAT64 = &nat64{
	lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip6", host)
	},
	hasRoute4: hasRoute4,
}

// hasRoute4 asks the kernel for a route to ip by connecting a UDP socket
// (no packet is sent); "network is unreachable" means IPv6-only.
func hasRoute4(ip netip.Addr) bool {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// prefixFromAAAA extracts a /96 NAT64 prefix from the synthesized AAAA
// records of ipv4only.arpa (only /96, the prefix length every NAT64 in
// common use has; RFC 6052's other lengths are not recognized).
func prefixFromAAAA(addrs []netip.Addr) (netip.Prefix, bool) {
	for _, a := range addrs {
		if !a.Is6() || a.Is4In6() {
			continue
		}
		b := a.As16()
		embedded := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		for _, w := range ipv4OnlyAddrs {
			if embedded == w {
				p, err := a.Prefix(96)
				return p, err == nil
			}
		}
	}
	return netip.Prefix{}, false
}

// discover returns the prefix, looking it up when the last look is older
// than nat64Recheck.
func (n *nat64) discover(ctx context.Context) (netip.Prefix, bool) {
	n.mu.Lock()
	if !n.checked.IsZero() && time.Since(n.checked) < nat64Recheck {
		p := n.prefix
		n.mu.Unlock()
		return p, p.IsValid()
	}
	n.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	addrs, err := n.lookup(lctx, ipv4OnlyName)
	cancel()
	p, ok := netip.Prefix{}, false
	if err == nil {
		p, ok = prefixFromAAAA(addrs)
	}
	n.mu.Lock()
	n.prefix, n.checked = p, time.Now()
	n.mu.Unlock()
	return p, ok
}

// cached is the prefix last discovered, without a lookup.
func (n *nat64) cached() (netip.Prefix, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.prefix, n.prefix.IsValid()
}

// synthesize embeds an IPv4 address in a /96 prefix (RFC 6052).
func synthesize(p netip.Prefix, v4 netip.Addr) netip.Addr {
	b := p.Addr().As16()
	a4 := v4.As4()
	copy(b[12:], a4[:])
	return netip.AddrFrom16(b)
}

// translate returns hostport with an IPv4 literal replaced by its NAT64
// address when this host has no IPv4 route to it and a prefix is known
// (discovering it if discover is set); anything else is returned as is.
func (n *nat64) translate(ctx context.Context, hostport string, discover bool) string {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil || !ap.Addr().Unmap().Is4() {
		return hostport
	}
	v4 := ap.Addr().Unmap()
	if n.hasRoute4(v4) {
		return hostport
	}
	var p netip.Prefix
	var ok bool
	if discover {
		p, ok = n.discover(ctx)
	} else {
		p, ok = n.cached()
	}
	if !ok {
		return hostport
	}
	return netip.AddrPortFrom(synthesize(p, v4), ap.Port()).String()
}

// translateUDP is translate for a resolved address (cached prefix only).
func (n *nat64) translateUDP(a *net.UDPAddr) *net.UDPAddr {
	ap := a.AddrPort()
	if !ap.Addr().Unmap().Is4() {
		return a
	}
	out := n.translate(context.Background(), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), false)
	if nap, err := netip.ParseAddrPort(out); err == nil && nap.Addr().Is6() {
		return net.UDPAddrFromAddrPort(nap)
	}
	return a
}
