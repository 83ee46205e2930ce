package lab

import (
	"context"
	"fmt"
)

// buildIPv6 gives the corporate network its IPv6 resource side (see
// CorpLAN6CIDR). Addresses are added without duplicate address detection
// (nodad), so they are usable at once. Only the connectors and the app host
// get a route, each to the other /64 through the corporate router; no node
// has an IPv6 default route, so IPv6 never leaves the corporate network.
func (l *Lab) buildIPv6(ctx context.Context) error {
	if err := l.ipn(ctx, NodeCorp, "addr", "add", CorpLAN6GW+"/64", "dev", "lan", "nodad"); err != nil {
		return fmt.Errorf("corporate IPv6: %w", err)
	}
	if err := l.ipn(ctx, NodeCorp, "addr", "add", Subnet6GW+"/64", "dev", "lab", "nodad"); err != nil {
		return fmt.Errorf("corporate IPv6: %w", err)
	}
	if err := l.sysctl(ctx, NodeCorp, "net.ipv6.conf.all.forwarding", "1"); err != nil {
		return err
	}
	for _, h := range []struct{ node, ip, via, to string }{
		{NodeConnectorA, ConnectorA6IP, CorpLAN6GW, Subnet6CIDR},
		{NodeConnectorB, ConnectorB6IP, CorpLAN6GW, Subnet6CIDR},
		{NodeDB, DB6IP, "", ""},
		{NodeWeb, Web6IP, "", ""},
		{NodeCorpDNS, CorpDNS6IP, "", ""},
		{NodeSubnetHost, SubnetHost6IP, Subnet6GW, CorpLAN6CIDR},
	} {
		if err := l.ipn(ctx, h.node, "addr", "add", h.ip+"/64", "dev", "eth0", "nodad"); err != nil {
			return fmt.Errorf("IPv6 address of %s: %w", h.node, err)
		}
		if h.via != "" {
			if err := l.ipn(ctx, h.node, "-6", "route", "add", h.to, "via", h.via); err != nil {
				return fmt.Errorf("IPv6 route of %s: %w", h.node, err)
			}
		}
	}
	return nil
}
