package traversal

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"postern.dev/postern/traversal/sigwire"
)

// DefaultExcludedPrefixes are never offered as host candidates: the client's
// synthetic ranges (its TUN holds addresses from them, and a peer that
// "reaches" one reaches itself). Other overlays' addresses are left out by
// interface (tunnelInterface), not by range: 100.64.0.0/10 is also ordinary
// LAN space on some clouds.
var DefaultExcludedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.96.0.0/12"),
	netip.MustParsePrefix("fd7a:7073:746e::/48"),
}

// tunnelPrefixes name interfaces of tunnels (WireGuard, TUN devices, macOS
// utun, Tailscale, Postern's own): their addresses are no way to reach us.
var tunnelPrefixes = []string{"wg", "tun", "utun", "tailscale", "ts", "postern", "zt", "ppp", "ipsec", "gif", "stf"}

// tunnelInterface reports whether an interface is a tunnel: a
// point-to-point link, one without a hardware address that is not loopback,
// or one named like a tunnel.
func tunnelInterface(ifc net.Interface) bool {
	if ifc.Flags&net.FlagPointToPoint != 0 {
		return true
	}
	name := strings.ToLower(ifc.Name)
	for _, p := range tunnelPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// usableHostIP reports whether ip may be a host candidate.
func usableHostIP(ip net.IP, exclude []netip.Prefix) bool {
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	for _, p := range exclude {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// hostCandidates lists the host candidates of a socket bound to local: the
// bound address itself, or the addresses of every interface that is up and
// not a tunnel when it is bound to the unspecified address (loopback,
// link-local and exclude left out).
func hostCandidates(local net.Addr, exclude []netip.Prefix) []sigwire.Candidate {
	ua, ok := local.(*net.UDPAddr)
	if !ok {
		return nil
	}
	port := strconv.Itoa(ua.Port)
	if !ua.IP.IsUnspecified() && ua.IP != nil {
		if !usableHostIP(ua.IP, exclude) && !ua.IP.IsLoopback() {
			return nil
		}
		return []sigwire.Candidate{{Type: sigwire.CandHost, Addr: net.JoinHostPort(ua.IP.String(), port)}}
	}
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []sigwire.Candidate
	for _, ifc := range ifcs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || tunnelInterface(ifc) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || !usableHostIP(ipn.IP, exclude) {
				continue
			}
			if ua.IP != nil && ua.IP.To4() != nil && ipn.IP.To4() == nil {
				continue // an IPv4 socket cannot reach IPv6 peers
			}
			out = append(out, sigwire.Candidate{Type: sigwire.CandHost, Addr: net.JoinHostPort(ipn.IP.String(), port)})
			if len(out) >= 8 {
				return out
			}
		}
	}
	return out
}

// typedAddr is a parsed candidate.
type typedAddr struct {
	addr *net.UDPAddr
	kind string
}

// resolveCandidates parses valid candidates, skipping the rest.
func resolveCandidates(cs []sigwire.Candidate) []typedAddr {
	var out []typedAddr
	for _, c := range cs {
		if c.Validate() != nil {
			continue
		}
		if a, err := c.UDPAddr(); err == nil {
			out = append(out, typedAddr{a, c.Type})
		}
	}
	return out
}
