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

// Counts counts something (connections, handshakes) per source key and in
// all. The zero value is ready to use. It has no lock of its own: its owner
// holds one around every call, often together with other state.
type Counts struct {
	total int
	by    map[netip.Prefix]int
}

// Total is the count over all sources.
func (c *Counts) Total() int { return c.total }

// Of is the count of source k.
func (c *Counts) Of(k netip.Prefix) int { return c.by[k] }

// Add counts one more for source k.
func (c *Counts) Add(k netip.Prefix) {
	if c.by == nil {
		c.by = map[netip.Prefix]int{}
	}
	c.total++
	c.by[k]++
}

// Done counts one less for source k; a source at zero is forgotten.
func (c *Counts) Done(k netip.Prefix) {
	if c.by[k] <= 0 {
		return // never counted: nothing to give back
	}
	c.total--
	if c.by[k] == 1 {
		delete(c.by, k)
		return
	}
	c.by[k]--
}

// Sources is how many sources have a count.
func (c *Counts) Sources() int { return len(c.by) }
