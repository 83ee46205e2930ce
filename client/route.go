package client

import (
	"net/netip"
	"sort"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/policy"
)

// resource is one policy resource, parsed.
type resource struct {
	controlapi.PolicyResource
	addr  policy.Address
	rules []policy.PortRule
}

// routeTable maps destinations to resources and resources to connectors. It
// is rebuilt from every policy snapshot and read without locks.
type routeTable struct {
	byID       map[string]*resource
	names      []*resource // exact names and wildcards, most specific first
	addrs      []*resource // IPs and CIDRs, longest prefix first
	connectors map[string][]controlapi.ConnectorInfo
	rev        int64
}

// NameMapper turns a synthetic address handed out by the DNS proxy back into
// the name and resource it stands for.
type NameMapper interface {
	Lookup(ip netip.Addr) (name, resourceID string, ok bool)
}

func buildRouteTable(p *controlapi.ClientPolicy) *routeTable {
	t := &routeTable{byID: map[string]*resource{}, connectors: map[string][]controlapi.ConnectorInfo{}}
	if p == nil {
		return t
	}
	t.rev = p.Revision
	for _, pr := range p.Resources {
		a, err := policy.ParseAddress(pr.Address)
		if err != nil {
			continue
		}
		rules, err := policy.ParsePortRules(pr.Ports)
		if err != nil {
			continue
		}
		r := &resource{PolicyResource: pr, addr: a, rules: rules}
		t.byID[pr.ID] = r
		if a.IsName() {
			t.names = append(t.names, r)
		} else {
			t.addrs = append(t.addrs, r)
		}
	}
	sort.SliceStable(t.names, func(i, j int) bool {
		a, b := t.names[i].addr, t.names[j].addr
		if (a.Kind == policy.KindName) != (b.Kind == policy.KindName) {
			return a.Kind == policy.KindName
		}
		return len(a.Name) > len(b.Name)
	})
	sort.SliceStable(t.addrs, func(i, j int) bool {
		return t.addrs[i].addr.Prefix.Bits() > t.addrs[j].addr.Prefix.Bits()
	})
	for _, c := range p.Connectors {
		t.connectors[c.Network] = append(t.connectors[c.Network], c)
	}
	return t
}

// matchName returns the resource a DNS name belongs to: an exact name beats
// a wildcard, a longer wildcard suffix beats a shorter one.
func (t *routeTable) matchName(n string) *resource {
	for _, r := range t.names {
		if r.addr.MatchName(n) {
			return r
		}
	}
	return nil
}

// matchAddr returns the IP/CIDR resource covering ip, longest prefix first.
func (t *routeTable) matchAddr(ip netip.Addr) *resource {
	for _, r := range t.addrs {
		if r.addr.MatchAddr(ip) {
			return r
		}
	}
	return nil
}

// target is a resolved flow destination.
type target struct {
	res  *resource
	dest string // the name (name resources) or the textual IP
}

// resolveAddr maps a destination IP to its resource: a synthetic address via
// the DNS proxy first, then the address and CIDR resources.
func (t *routeTable) resolveAddr(ip netip.Addr, names NameMapper) (target, bool) {
	ip = ip.Unmap()
	if names != nil {
		if name, rid, ok := names.Lookup(ip); ok {
			if r := t.byID[rid]; r != nil {
				return target{res: r, dest: policy.CanonicalName(name)}, true
			}
			if r := t.matchName(name); r != nil {
				return target{res: r, dest: policy.CanonicalName(name)}, true
			}
			return target{}, false
		}
	}
	if r := t.matchAddr(ip); r != nil {
		return target{res: r, dest: ip.String()}, true
	}
	return target{}, false
}

// resolveHost maps a host given by name or IP literal (SOCKS5) to its resource.
func (t *routeTable) resolveHost(host string, names NameMapper) (target, bool) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return t.resolveAddr(ip, names)
	}
	if r := t.matchName(host); r != nil {
		return target{res: r, dest: policy.CanonicalName(host)}, true
	}
	return target{}, false
}

// routes returns the IP and CIDR resource prefixes (for the OS router).
func (t *routeTable) routes() []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, r := range t.addrs {
		p := r.addr.Prefix.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
