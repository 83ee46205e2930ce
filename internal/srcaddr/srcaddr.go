// Package srcaddr names the source that per-source limits count by: an
// IPv4 address, or the /64 of an IPv6 one (a host usually has a whole /64
// to send from, so counting single IPv6 addresses would bound nothing).
// The connector's admission of connections awaiting a token and the relay's
// bound on TLS handshakes both key by it.
package srcaddr

import (
	"net"
	"net/netip"
)

// Key is addr's source key; the zero Prefix when addr has no IP.
func Key(addr net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	return netip.PrefixFrom(ip, 64).Masked()
}

// String formats a key for logs: the bare address for IPv4, the prefix for
// IPv6.
func String(k netip.Prefix) string {
	if k.Addr().Is4() && k.Bits() == 32 {
		return k.Addr().String()
	}
	return k.String()
}
