//go:build !linux

package platform

import (
	"fmt"
	"net"
	"net/netip"
)

// machineEntries lists the addresses of every interface. Routes are not
// read on this system (yet): an address in a conflicting network is the
// common case (another VPN, a CGNAT LAN).
func machineEntries() ([]netEntry, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []netEntry
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ones, _ := n.Mask.Size()
			p := netip.PrefixFrom(ip.Unmap(), ones)
			out = append(out, netEntry{Prefix: p, IfName: ifc.Name, What: fmt.Sprintf("address %s on %s", p, ifc.Name)})
		}
	}
	return out, nil
}
