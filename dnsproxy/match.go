package dnsproxy

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/policy"
)

// rule is one name the proxy answers: a resource's address (exact name or
// wildcard) or an alias.
type rule struct {
	res     controlapi.PolicyResource
	pattern string // what matched: "db.corp.internal", "*.corp.internal", or the alias
	alias   bool
	// target is the name the connector resolves for an alias of a name
	// resource ("" otherwise: the queried name itself is the target).
	target string
	// fixed is set for an alias of an IP resource: the alias answers the IP
	// itself, which is routed to the tunnel like any address resource.
	fixed netip.Addr
}

// table is an immutable snapshot of the resources the user may use.
type table struct {
	exact map[string]*rule // canonical name -> rule
	wild  map[string]*rule // wildcard suffix (without "*.") -> rule
}

// match finds the rule for a canonical name: an exact name first, then the
// wildcard with the longest suffix.
func (t *table) match(name string) *rule {
	if t == nil || name == "" {
		return nil
	}
	if r := t.exact[name]; r != nil {
		return r
	}
	if len(t.wild) == 0 {
		return nil
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
		if r := t.wild[rest]; r != nil {
			return r
		}
	}
}

// dialName is the name a flow to name (which matched r) must ask the
// connector for.
func (r *rule) dialName(name string) string {
	if r.target != "" {
		return r.target
	}
	return name
}

// buildTable turns a resource list into a table. Resources that are not
// names (IPs, CIDRs) only contribute their aliases. When two resources claim
// the same name the one with the smaller ID wins (and a warning is logged),
// so the outcome does not depend on list order.
func buildTable(rs []controlapi.PolicyResource, log *slog.Logger) *table {
	t := &table{exact: make(map[string]*rule), wild: make(map[string]*rule)}
	sorted := slices.Clone(rs)
	slices.SortStableFunc(sorted, func(a, b controlapi.PolicyResource) int { return cmp.Compare(a.ID, b.ID) })
	put := func(m map[string]*rule, key string, r *rule) {
		if old := m[key]; old != nil {
			log.Warn("dns: two resources claim the same name; keeping the first", "name", r.pattern, "kept", old.res.Name, "ignored", r.res.Name)
			return
		}
		m[key] = r
	}
	for _, res := range sorted {
		addr, err := policy.ParseAddress(res.Address)
		if err != nil {
			log.Warn("dns: resource with an invalid address ignored", "resource", res.Name, "address", res.Address, "err", err)
			continue
		}
		switch addr.Kind {
		case policy.KindName:
			put(t.exact, addr.Name, &rule{res: res, pattern: addr.Name})
		case policy.KindWildcard:
			put(t.wild, addr.Name, &rule{res: res, pattern: "*." + addr.Name})
		}
		if res.Alias == "" {
			continue
		}
		al, err := policy.ParseAddress(res.Alias)
		if err != nil || al.Kind != policy.KindName {
			log.Warn("dns: resource alias is not a DNS name; ignored", "resource", res.Name, "alias", res.Alias)
			continue
		}
		r := &rule{res: res, pattern: al.Name, alias: true}
		switch addr.Kind {
		case policy.KindName:
			r.target = addr.Name
		case policy.KindIP:
			r.fixed = addr.Prefix.Addr()
		default:
			log.Warn("dns: an alias only makes sense for a DNS name or a single IP; ignored", "resource", res.Name, "alias", res.Alias, "address", res.Address)
			continue
		}
		put(t.exact, al.Name, r)
	}
	return t
}

// domains returns the DNS names the table answers for, as split-DNS match
// domains: each exact name, each wildcard's suffix (which covers every name
// below it; the apex itself is then forwarded upstream by the proxy).
func (t *table) domains() []string {
	seen := make(map[string]bool)
	for n := range t.exact {
		seen[n] = true
	}
	for s := range t.wild {
		seen[s] = true
	}
	// A name below another match domain is covered by it.
	var out []string
	for n := range seen {
		covered := false
		for rest := n; !covered; {
			i := strings.IndexByte(rest, '.')
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			covered = seen[rest]
		}
		if !covered {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// reverseZones returns the in-addr.arpa / ip6.arpa zones that cover p
// (one zone per value of the bits between p's length and the next octet or
// nibble boundary: 16 for 100.96.0.0/12, one for a /48).
func reverseZones(p netip.Prefix) []string {
	step := 8
	if p.Addr().Is6() {
		step = 4
	}
	bits := p.Bits()
	whole := (bits + step - 1) / step * step // round up to a label boundary
	extra := whole - bits                    // < step, so at most 128 zones
	var out []string
	for i := 0; i < 1<<extra; i++ {
		b := p.Masked().Addr().AsSlice()
		// Write i into the bits between p's length and the boundary.
		for j := 0; j < extra; j++ {
			if i>>(extra-1-j)&1 == 1 {
				pos := bits + j
				b[pos/8] |= 0x80 >> (pos % 8)
			}
		}
		out = append(out, reverseZone(b, whole))
	}
	return out
}

// reverseZone names the reverse zone of the first bits of addr b.
func reverseZone(b []byte, bits int) string {
	var labels []string
	if len(b) == 4 {
		for i := 0; i < bits/8; i++ {
			labels = append(labels, fmt.Sprint(b[i]))
		}
		slices.Reverse(labels)
		return strings.Join(append(labels, "in-addr", "arpa"), ".")
	}
	for i := 0; i < bits/4; i++ {
		nib := b[i/2] >> 4
		if i%2 == 1 {
			nib = b[i/2] & 0xf
		}
		labels = append(labels, fmt.Sprintf("%x", nib))
	}
	slices.Reverse(labels)
	return strings.Join(append(labels, "ip6", "arpa"), ".")
}

// parseReverse turns a canonical PTR query name into an address.
func parseReverse(name string) (netip.Addr, bool) {
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa"):
		parts := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa"), ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(parts)
		a, err := netip.ParseAddr(strings.Join(parts, "."))
		return a, err == nil && a.Is4()
	case strings.HasSuffix(name, ".ip6.arpa"):
		parts := strings.Split(strings.TrimSuffix(name, ".ip6.arpa"), ".")
		if len(parts) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, p := range parts {
			if len(p) != 1 {
				return netip.Addr{}, false
			}
			var v byte
			switch c := p[0]; {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// parts[0] is the lowest nibble.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
