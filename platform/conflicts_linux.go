package platform

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// machineEntries lists every address and every route in every routing
// table (other VPNs often use their own table, like Tailscale's 52).
func machineEntries() ([]netEntry, error) {
	names := map[int]string{}
	linkName := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		n := fmt.Sprintf("if%d", idx)
		if l, err := netlink.LinkByIndex(idx); err == nil {
			n = l.Attrs().Name
		}
		names[idx] = n
		return n
	}
	var out []netEntry
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		p, ok := prefixFromIPNet(a.IPNet)
		if !ok {
			continue
		}
		n := linkName(a.LinkIndex)
		out = append(out, netEntry{Prefix: p, IfName: n, What: fmt.Sprintf("address %s on %s", p, n)})
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		p, ok := prefixFromIPNet(r.Dst)
		if !ok {
			continue
		}
		if r.Table == unix.RT_TABLE_LOCAL {
			continue // local/broadcast entries mirror the addresses listed above
		}
		n := linkName(r.LinkIndex)
		what := fmt.Sprintf("route %s dev %s", p, n)
		if r.Table != unix.RT_TABLE_MAIN {
			what += fmt.Sprintf(" table %d", r.Table)
		}
		out = append(out, netEntry{Prefix: p, IfName: n, What: what})
	}
	return out, nil
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNetFromPrefix(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
