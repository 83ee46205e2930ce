package traversal

import (
	"net"
	"strconv"

	"postern.dev/postern/traversal/sigwire"
)

// hostCandidates lists the host candidates of a socket bound to local: the
// bound address itself, or every usable interface address when it is bound
// to the unspecified address (loopback and link-local left out).
func hostCandidates(local net.Addr) []sigwire.Candidate {
	ua, ok := local.(*net.UDPAddr)
	if !ok {
		return nil
	}
	port := strconv.Itoa(ua.Port)
	if !ua.IP.IsUnspecified() && ua.IP != nil {
		return []sigwire.Candidate{{Type: sigwire.CandHost, Addr: net.JoinHostPort(ua.IP.String(), port)}}
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []sigwire.Candidate
	for _, a := range ifAddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipn.IP
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		if ua.IP != nil && ua.IP.To4() != nil && ip.To4() == nil {
			continue // an IPv4 socket cannot reach IPv6 peers
		}
		out = append(out, sigwire.Candidate{Type: sigwire.CandHost, Addr: net.JoinHostPort(ip.String(), port)})
		if len(out) >= 8 {
			break
		}
	}
	return out
}

// resolveCandidates parses valid candidates, skipping the rest.
func resolveCandidates(cs []sigwire.Candidate) []*net.UDPAddr {
	var out []*net.UDPAddr
	for _, c := range cs {
		if c.Validate() != nil {
			continue
		}
		if a, err := c.UDPAddr(); err == nil {
			out = append(out, a)
		}
	}
	return out
}
