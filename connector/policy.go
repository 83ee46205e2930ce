package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/policy"
	"postern.dev/postern/wire"
)

// compiledPolicy is a parsed ConnectorPolicy snapshot, immutable once built.
type compiledPolicy struct {
	raw       controlapi.ConnectorPolicy
	rev       int64
	issuer    string
	keys      *ctoken.KeySet
	resources map[string]*compiledResource
	revoked   map[string]bool
	access    compiledAccess
}

type compiledResource struct {
	id, name   string
	addr       policy.Address
	ports      []policy.PortRule
	principals map[string]bool
	// namesSpecial: an IP/CIDR resource that lies entirely in loopback,
	// link-local or metadata space names such addresses explicitly.
	namesSpecial bool
	// Access governance (access.go).
	require controlapi.Requirements
	grants  map[string]time.Time
	lastUse map[string]time.Time
}

// compilePolicy validates a snapshot. A snapshot with a bad resource is
// refused as a whole: the connector keeps enforcing its previous policy.
func compilePolicy(p controlapi.ConnectorPolicy) (*compiledPolicy, error) {
	if p.Issuer == "" {
		return nil, errors.New("policy has no token issuer")
	}
	keys, err := ctoken.ParseJWKS(p.JWKS)
	if err != nil {
		return nil, fmt.Errorf("policy token keys: %w", err)
	}
	cp := &compiledPolicy{
		raw: p, rev: p.Revision, issuer: p.Issuer, keys: ctoken.NewKeySet(keys),
		resources: make(map[string]*compiledResource, len(p.Resources)),
		revoked:   make(map[string]bool, len(p.RevokedDevices)),
		access:    compileAccess(p.Access),
	}
	for _, r := range p.Resources {
		if r.ID == "" {
			return nil, fmt.Errorf("policy resource %q has no id", r.Name)
		}
		addr, err := policy.ParseAddress(r.Address)
		if err != nil {
			return nil, fmt.Errorf("policy resource %q: %w", r.Name, err)
		}
		ports, err := policy.ParsePortRules(r.Ports)
		if err != nil {
			return nil, fmt.Errorf("policy resource %q: %w", r.Name, err)
		}
		cr := &compiledResource{id: r.ID, name: r.Name, addr: addr, ports: ports, principals: make(map[string]bool, len(r.Principals)),
			grants: r.Grants, lastUse: r.LastUse}
		if r.Require != nil {
			cr.require = *r.Require
		}
		for _, pr := range r.Principals {
			cr.principals[pr] = true
		}
		if addr.Kind == policy.KindIP || addr.Kind == policy.KindCIDR {
			cr.namesSpecial = prefixIsSpecial(addr.Prefix)
		}
		cp.resources[r.ID] = cr
	}
	for _, d := range p.RevokedDevices {
		cp.revoked[d] = true
	}
	return cp, nil
}

// decision is the outcome of checking a flow header against the policy.
type decision struct {
	res    *compiledResource
	status wire.Status
	reason string    // refusal reason (metrics label and status message)
	until  time.Time // ok until then (an access grant's end); zero: no end
}

// authorize checks one flow header for the token's principal and device at
// now: the resource exists, the principal may reach it, the resource's
// access requirements are met (access.go; running re-checks an established
// flow), the protocol and port are allowed, and the destination lies inside
// the resource's definition. It does not resolve.
func (p *compiledPolicy) authorize(cl *ctoken.Claims, h wire.OpenHeader, now time.Time, running bool) decision {
	d := p.authorizeHeader(cl.Subject, cl.Device, h)
	if d.status != wire.StatusOK {
		return d
	}
	a := p.checkAccess(d.res, cl, now, running)
	if a.status != wire.StatusOK {
		return decision{res: d.res, status: a.status, reason: a.reason}
	}
	d.until = a.until
	return d
}

// authorizeHeader is authorize without the access requirements.
func (p *compiledPolicy) authorizeHeader(principal, device string, h wire.OpenHeader) decision {
	if p.revoked[device] {
		return decision{status: wire.StatusDenied, reason: "device revoked"}
	}
	res, ok := p.resources[h.ResourceID]
	if !ok {
		return decision{status: wire.StatusDenied, reason: "unknown resource"}
	}
	if !res.principals[principal] {
		return decision{res: res, status: wire.StatusDenied, reason: "principal not allowed"}
	}
	proto := policy.ProtoName(h.Proto)
	if h.Proto == wire.ProtoICMP && h.Port != 0 {
		return decision{res: res, status: wire.StatusBadRequest, reason: "icmp with a port"}
	}
	if h.Proto != wire.ProtoICMP && h.Port == 0 {
		return decision{res: res, status: wire.StatusBadRequest, reason: "port 0"}
	}
	if !policy.Allows(res.ports, proto, h.Port) {
		return decision{res: res, status: wire.StatusDenied, reason: "port or protocol not allowed"}
	}
	if ip, isIP := h.DestinationAddr(); isIP {
		ip = ip.Unmap()
		if !res.addr.MatchAddr(ip) {
			return decision{res: res, status: wire.StatusDenied, reason: "address outside resource"}
		}
		if isSpecial(ip) && !res.namesSpecial {
			return decision{res: res, status: wire.StatusDenied, reason: "address not allowed"}
		}
		return decision{res: res, status: wire.StatusOK}
	}
	if !res.addr.IsName() || !res.addr.MatchName(h.Destination) {
		return decision{res: res, status: wire.StatusDenied, reason: "name outside resource"}
	}
	return decision{res: res, status: wire.StatusOK}
}

// Addresses the connector never dials unless a resource names them: its own
// loopback, link-local, unspecified and multicast addresses, and the cloud
// metadata and host endpoints below. Link-local already covers the IPv4
// metadata services of AWS, GCP, Azure, Oracle, Tencent and OpenStack
// (169.254.169.254), AWS ECS task credentials (169.254.170.2), EKS Pod
// Identity (169.254.170.23), the Amazon DNS resolver (169.254.169.253) and
// time service (169.254.169.123). The list is in docs/connector.md.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("168.63.129.16"),   // Azure wire server (host agent, DNS, health probes)
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("fd00:ec2::253"),   // AWS Amazon DNS resolver over IPv6
	netip.MustParseAddr("fd00:ec2::123"),   // AWS time sync over IPv6
	netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity agent over IPv6
	netip.MustParseAddr("fd20:ce::254"),    // GCP metadata server over IPv6
}

func isSpecial(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() {
		return true
	}
	for _, m := range metadataAddrs {
		if ip == m {
			return true
		}
	}
	return false
}

// prefixIsSpecial reports whether every address of p is special (so that the
// resource names loopback/link-local/metadata space explicitly).
func prefixIsSpecial(p netip.Prefix) bool {
	p = p.Masked()
	first := p.Addr()
	last := lastAddr(p)
	return isSpecial(first) && isSpecial(last) && sameSpecialBlock(first, last)
}

// sameSpecialBlock checks that two special addresses fall in the same
// special block, so that a prefix from one block to another (which would
// include ordinary addresses) is not taken as special.
func sameSpecialBlock(a, b netip.Addr) bool {
	blocks := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff00::/8"),
		netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128"),
	}
	for _, m := range metadataAddrs {
		blocks = append(blocks, netip.PrefixFrom(m, m.BitLen()))
	}
	for _, bl := range blocks {
		if bl.Contains(a) && bl.Contains(b) {
			return true
		}
	}
	return false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// tokenVerifier returns the verifier for Connection Tokens under this policy.
func (p *compiledPolicy) tokenVerifier() *ctoken.Verifier {
	return &ctoken.Verifier{Issuer: p.issuer, Keys: p.keys}
}

// loadPolicy reads the persisted policy (fail static). A missing file is not
// an error; a corrupt one is logged by the caller and ignored.
func loadPolicy(dir string) (*compiledPolicy, error) {
	b, err := os.ReadFile(filepath.Join(dir, policyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stored policy: %w", err)
	}
	var p controlapi.ConnectorPolicy
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parse stored policy: %w", err)
	}
	return compilePolicy(p)
}

// savePolicy persists a policy snapshot atomically.
func savePolicy(dir string, p controlapi.ConnectorPolicy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, policyFile), b, 0o600); err != nil {
		return fmt.Errorf("store policy: %w", err)
	}
	return nil
}
