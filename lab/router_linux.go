package lab

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

type routerKind int

const (
	routerHome routerKind = iota // masquerade, forwards everything
	routerCorp                   // masquerade, no new inbound
)

// routerState is a router's fault configuration; its nftables table is
// regenerated from it atomically on every change.
type routerState struct {
	mu   sync.Mutex
	name string
	kind routerKind
	f    routerFaults
}

// routerFaults are the faults a router applies.
type routerFaults struct {
	blockAll  bool
	blockUDP  bool
	symmetric bool
	dropPct   int
	nat       NATKind // "" is NATEIM
}

// NATKind is a router's NAT behaviour (SetNAT).
type NATKind string

// NAT kinds, after RFC 4787's mapping and filtering behaviours.
const (
	// NATEIM: endpoint-independent mapping, address-and-port-dependent
	// filtering (masquerade), unsolicited packets to the router dropped.
	// The default.
	NATEIM NATKind = "eim-apdf"
	// NATPortClash: NATEIM without the input firewall: a peer's packet
	// that reaches the router before its LAN host has sent to that peer
	// becomes a conntrack entry, and masquerade then gives the host's own
	// packets to the peer another source port.
	NATPortClash NATKind = "port-clash"
	// NATFullCone: endpoint-independent mapping and filtering: masquerade
	// keeping the port, and inbound UDP to the router's address forwarded
	// (same port) to the LAN's first host (ClientIP at home, ConnectorAIP
	// at the office).
	NATFullCone NATKind = "full-cone"
	// NATSymmetric: endpoint-dependent mapping (masquerade random), as
	// SymmetricNAT.
	NATSymmetric NATKind = "symmetric"
)

// ParseNATKind checks a NAT kind's name.
func ParseNATKind(s string) (NATKind, error) {
	switch k := NATKind(s); k {
	case NATEIM, NATPortClash, NATFullCone, NATSymmetric:
		return k, nil
	}
	return "", fmt.Errorf("%w %q (want %s, %s, %s or %s)", ErrUnknownNATKind, s, NATEIM, NATPortClash, NATFullCone, NATSymmetric)
}

// fullConeHost is the LAN host a full-cone router forwards inbound UDP to.
func fullConeHost(kind routerKind) string {
	if kind == routerCorp {
		return ConnectorAIP
	}
	return ClientIP
}

const nftTable = "postern_lab"

func (l *Lab) routerRuleset(rs *routerState) string {
	var b strings.Builder
	// "add table" + "delete table" makes the first apply and every later one
	// the same atomic transaction.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	b.WriteString("  chain udpblock {\n    udp sport 53 return\n    udp dport 53 return\n    meta l4proto udp drop\n  }\n")
	// Like any home or office router, drop unsolicited traffic to the router
	// itself from the WAN. Without this, a peer's early hole-punching packet
	// (sent before the LAN host's own packet created the mapping) becomes a
	// conntrack entry for the router's own address and port, and masquerade
	// then picks another source port for the LAN host: hole punching
	// through an endpoint-independent NAT would fail.
	if rs.f.nat != NATPortClash {
		b.WriteString("  chain input {\n    type filter hook input priority 0; policy accept;\n    iifname \"wan\" ct state new drop\n  }\n")
	}
	b.WriteString("  chain forward {\n    type filter hook forward priority 0; policy accept;\n")
	if rs.f.blockAll {
		b.WriteString("    iifname \"wan\" drop\n    oifname \"wan\" drop\n")
	}
	if rs.f.blockUDP {
		// Like a hotel or corporate firewall: DNS still works, all other UDP
		// is dropped. (A jump chain, because nft merges "udp sport != 53
		// udp dport != 53" into one comparison of both ports.)
		b.WriteString("    iifname \"wan\" jump udpblock\n    oifname \"wan\" jump udpblock\n")
	}
	if rs.f.dropPct >= 100 {
		b.WriteString("    iifname \"wan\" drop\n    oifname \"wan\" drop\n")
	} else if rs.f.dropPct > 0 {
		fmt.Fprintf(&b, "    iifname \"wan\" numgen random mod 100 < %d drop\n", rs.f.dropPct)
		fmt.Fprintf(&b, "    oifname \"wan\" numgen random mod 100 < %d drop\n", rs.f.dropPct)
	}
	if rs.kind == routerHome && l.opts.Underlay6 {
		// IPv6 is routed, not translated: a home router's stateful
		// firewall admits replies only.
		b.WriteString("    iifname \"wan\" meta nfproto ipv6 ct state established,related accept\n")
		b.WriteString("    iifname \"wan\" meta nfproto ipv6 drop\n")
	}
	if rs.kind == routerCorp {
		b.WriteString("    iifname \"wan\" ct state established,related accept\n")
		if rs.f.nat == NATFullCone {
			b.WriteString("    iifname \"wan\" ct status dnat accept\n")
		}
		if l.opts.ReachableConnectors {
			fmt.Fprintf(&b, "    iifname \"wan\" ip daddr { %s, %s } meta l4proto udp accept\n", ConnectorAIP, ConnectorBIP)
			fmt.Fprintf(&b, "    iifname \"wan\" ip daddr { %s, %s } icmp type echo-request accept\n", ConnectorAIP, ConnectorBIP)
		}
		b.WriteString("    iifname \"wan\" drop\n")
	}
	b.WriteString("  }\n")
	b.WriteString("  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n")
	// IPv4 only: IPv6 (Underlay6) is routed without NAT.
	switch {
	case rs.f.symmetric || rs.f.nat == NATSymmetric:
		b.WriteString("    oifname \"wan\" meta nfproto ipv4 masquerade random\n")
	case rs.f.nat == NATFullCone:
		b.WriteString("    oifname \"wan\" meta nfproto ipv4 masquerade persistent\n")
	default:
		b.WriteString("    oifname \"wan\" meta nfproto ipv4 masquerade\n")
	}
	b.WriteString("  }\n")
	if rs.f.nat == NATFullCone {
		fmt.Fprintf(&b, "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"wan\" meta l4proto udp dnat ip to %s\n  }\n", fullConeHost(rs.kind))
	}
	b.WriteString("}\n")
	return b.String()
}

func (l *Lab) applyRouter(ctx context.Context, rs *routerState) error {
	rules := l.routerRuleset(rs)
	if _, err := l.ExecInput(ctx, rs.name, strings.NewReader(rules), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nftables of router %s: %w", rs.name, err)
	}
	return nil
}

func (l *Lab) routerByName(name string) (*routerState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rs, ok := l.routers[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (want %q or %q)", ErrUnknownRouter, name, RouterHome, RouterCorp)
	}
	return rs, nil
}

func (l *Lab) changeRouter(ctx context.Context, name string, change func(*routerFaults)) error {
	rs, err := l.routerByName(name)
	if err != nil {
		return err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	old := rs.f
	change(&rs.f)
	if err := l.applyRouter(ctx, rs); err != nil {
		rs.f = old
		return err
	}
	return nil
}

// FlushConntrack forgets every connection (and NAT mapping) a router has.
func (l *Lab) FlushConntrack(router string) error {
	if _, err := l.routerByName(router); err != nil {
		return err
	}
	h, err := netns.GetFromName(l.NS(router))
	if err != nil {
		return fmt.Errorf("open netns of %s: %w", router, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", router, err)
	}
	defer nh.Close()
	if err := nh.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack of %s: %w", router, err)
	}
	return nil
}
