package connector

import (
	"net/netip"
	"testing"

	"postern.dev/postern/policy"
	"postern.dev/postern/wire"
)

// TestMetadataEndpointsRefused checks every cloud metadata and host endpoint
// is refused through a resource that merely contains it (0.0.0.0/0, ::/0, a
// name), and allowed only through a resource naming it exactly.
func TestMetadataEndpointsRefused(t *testing.T) {
	endpoints := []string{
		"169.254.169.254",                                                 // AWS, GCP, Azure, Oracle, OpenStack IMDS
		"169.254.170.2",                                                   // AWS ECS task credentials
		"169.254.170.23",                                                  // AWS EKS Pod Identity
		"169.254.169.253",                                                 // Amazon DNS
		"169.254.169.123",                                                 // Amazon time sync
		"168.63.129.16",                                                   // Azure wire server
		"100.100.100.200",                                                 // Alibaba Cloud
		"fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123", "fd00:ec2::23", // AWS over IPv6
		"fd20:ce::254", // GCP over IPv6
		"::ffff:168.63.129.16",
	}
	for _, e := range endpoints {
		ip := netip.MustParseAddr(e)
		if !isSpecial(ip) {
			t.Errorf("%s is not in the block list", e)
		}
		wide := "0.0.0.0/0"
		if ip.Unmap().Is6() {
			wide = "::/0"
		}
		// A wider block that also holds ordinary addresses.
		bits := 8
		if ip.Unmap().Is6() {
			bits = 16
		}
		for _, res := range []string{wide, netip.PrefixFrom(ip.Unmap(), bits).Masked().String()} {
			if d := authorizeOne(t, res, e); d.status != wire.StatusDenied {
				t.Errorf("%s through resource %s: status %v, want denied", e, res, d.status)
			}
		}
		// A resource that names the endpoint itself reaches it.
		if d := authorizeOne(t, ip.Unmap().String(), e); d.status != wire.StatusOK {
			t.Errorf("%s through a resource naming it: status %v (%s), want OK", e, d.status, d.reason)
		}
	}
	// Neighbours are ordinary addresses.
	for _, e := range []string{"168.63.129.15", "168.63.129.17", "100.100.100.201", "fd00:ec2::255", "fd20:ce::253"} {
		if isSpecial(netip.MustParseAddr(e)) {
			t.Errorf("%s is blocked but is no metadata endpoint", e)
		}
	}
	// A CIDR from a metadata endpoint into ordinary space is not taken as
	// naming it.
	if prefixIsSpecial(netip.MustParsePrefix("168.63.129.16/31")) {
		t.Error("168.63.129.16/31 is taken as naming only special addresses")
	}
}

func authorizeOne(t *testing.T, resource, dest string) decision {
	t.Helper()
	addr, err := policy.ParseAddress(resource)
	if err != nil {
		t.Fatalf("parse %s: %v", resource, err)
	}
	ports, err := policy.ParsePortRules([]string{"tcp/80"})
	if err != nil {
		t.Fatal(err)
	}
	cr := &compiledResource{id: "r", name: "r", addr: addr, ports: ports, principals: map[string]bool{"alice": true}}
	if addr.Kind == policy.KindIP || addr.Kind == policy.KindCIDR {
		cr.namesSpecial = prefixIsSpecial(addr.Prefix)
	}
	p := &compiledPolicy{resources: map[string]*compiledResource{"r": cr}, revoked: map[string]bool{}}
	return p.authorizeHeader("alice", "dev", wire.OpenHeader{Proto: wire.ProtoTCP, Port: 80, ResourceID: "r", Destination: dest})
}
