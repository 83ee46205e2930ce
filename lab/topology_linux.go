package lab

import (
	"context"
	"fmt"
	"strings"

	"postern.dev/postern/internal/testenv/netnstest"
)

// hostSpec is a leaf node attached to a bridge.
type hostSpec struct {
	name     string
	ip       string
	prefix   string // "/24"
	gw       string
	bridgeNS string // node holding the bridge
	bridge   string
	dns      string // resolv.conf nameserver
}

func (l *Lab) addNamespace(ctx context.Context, name, nameserver string) (*Node, error) {
	ns := l.ID + "-" + name
	// resolv.conf before anything runs in the namespace, so that a program
	// writing /etc/resolv.conf writes this file, never the machine's.
	resolv := "# written by postern-lab " + l.ID + "\nnameserver " + nameserver + "\noptions timeout:2 attempts:2\n"
	if err := netnstest.Create(ctx, ns, resolv, ""); err != nil {
		return nil, err
	}
	n := &Node{Name: name, NS: ns}
	l.mu.Lock()
	l.nodes[name] = n
	l.nsOrder = append(l.nsOrder, ns)
	l.mu.Unlock()
	return n, nil
}

// sysctl sets a per-namespace sysctl.
func (l *Lab) sysctl(ctx context.Context, node, key, value string) error {
	if _, err := l.Exec(ctx, node, "sysctl", "-q", "-w", key+"="+value); err != nil {
		return fmt.Errorf("sysctl %s in %s: %w", key, node, err)
	}
	return nil
}

// veth creates a pair directly between two lab namespaces under unique
// temporary names (it never exists in the machine's own namespace), then
// renames each end inside its namespace.
func (l *Lab) veth(ctx context.Context, nodeA, nameA, nodeB, nameB string) error {
	a, err := l.Node(nodeA)
	if err != nil {
		return err
	}
	b, err := l.Node(nodeB)
	if err != nil {
		return err
	}
	return netnstest.Veth(ctx, a.NS, nameA, b.NS, nameB)
}

func (l *Lab) ipn(ctx context.Context, node string, args ...string) error {
	n, err := l.Node(node)
	if err != nil {
		return err
	}
	if _, err := run(ctx, nil, append([]string{"ip", "-n", n.NS}, args...)...); err != nil {
		return fmt.Errorf("in %s: %w", node, err)
	}
	return nil
}

func (l *Lab) bridge(ctx context.Context, node, name, cidrAddr string) error {
	if err := l.ipn(ctx, node, "link", "add", name, "type", "bridge"); err != nil {
		return err
	}
	args := []string{"addr", "add", cidrAddr, "dev", name}
	if strings.Contains(cidrAddr, ":") {
		args = append(args, "nodad") // IPv6: usable at once
	}
	if err := l.ipn(ctx, node, args...); err != nil {
		return err
	}
	return l.ipn(ctx, node, "link", "set", name, "up")
}

// attach plugs a host into a bridge: host side "eth0", bridge side "v-<host>".
func (l *Lab) attach(ctx context.Context, h hostSpec) error {
	n, err := l.addNamespace(ctx, h.name, h.dns)
	if err != nil {
		return err
	}
	n.IP = h.ip
	port := "v-" + h.name
	if len(port) > 15 {
		port = port[:15]
	}
	if err := l.veth(ctx, h.name, "eth0", h.bridgeNS, port); err != nil {
		return err
	}
	if err := l.ipn(ctx, h.bridgeNS, "link", "set", port, "master", h.bridge, "up"); err != nil {
		return err
	}
	if err := l.ipn(ctx, h.name, "addr", "add", h.ip+h.prefix, "dev", "eth0"); err != nil {
		return err
	}
	if err := l.ipn(ctx, h.name, "link", "set", "eth0", "up"); err != nil {
		return err
	}
	return l.ipn(ctx, h.name, "route", "add", "default", "via", h.gw)
}

// router creates a NAT router: "wan" on the internet bridge, LAN bridge "lan".
func (l *Lab) router(ctx context.Context, name, wanIP, lanGWCIDR string, kind routerKind) error {
	n, err := l.addNamespace(ctx, name, PublicDNSIP)
	if err != nil {
		return err
	}
	n.IP = wanIP
	port := "v-" + name
	if err := l.veth(ctx, name, "wan", NodeInternet, port); err != nil {
		return err
	}
	if err := l.ipn(ctx, NodeInternet, "link", "set", port, "master", "br0", "up"); err != nil {
		return err
	}
	if err := l.ipn(ctx, name, "addr", "add", wanIP+"/24", "dev", "wan"); err != nil {
		return err
	}
	if err := l.ipn(ctx, name, "link", "set", "wan", "up"); err != nil {
		return err
	}
	if err := l.ipn(ctx, name, "route", "add", "default", "via", InternetGW); err != nil {
		return err
	}
	if err := l.bridge(ctx, name, "lan", lanGWCIDR); err != nil {
		return err
	}
	if err := l.sysctl(ctx, name, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	rs := &routerState{name: name, kind: kind}
	l.mu.Lock()
	l.routers[name] = rs
	l.mu.Unlock()
	return l.applyRouter(ctx, rs)
}

func (l *Lab) buildTopology(ctx context.Context) error {
	// The internet: a bridge that also routes (and answers "no route" for
	// every address outside the lab's internet).
	if _, err := l.addNamespace(ctx, NodeInternet, PublicDNSIP); err != nil {
		return err
	}
	l.nodes[NodeInternet].IP = InternetGW
	if err := l.bridge(ctx, NodeInternet, "br0", InternetGW+"/24"); err != nil {
		return err
	}
	if err := l.sysctl(ctx, NodeInternet, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	for _, h := range []hostSpec{
		{name: NodeController, ip: ControllerIP},
		{name: NodeRelay, ip: RelayIP},
		{name: NodePublicDNS, ip: PublicDNSIP},
	} {
		h.prefix, h.gw, h.bridgeNS, h.bridge, h.dns = "/24", InternetGW, NodeInternet, "br0", PublicDNSIP
		if err := l.attach(ctx, h); err != nil {
			return err
		}
	}
	if l.opts.ControllerReplicas >= 2 {
		h := hostSpec{name: NodeControllerB, ip: ControllerBIP, prefix: "/24", gw: InternetGW, bridgeNS: NodeInternet, bridge: "br0", dns: PublicDNSIP}
		if err := l.attach(ctx, h); err != nil {
			return err
		}
	}
	// www.example.com lives next to the public DNS server.
	if err := l.ipn(ctx, NodePublicDNS, "addr", "add", PublicWebIP+"/24", "dev", "eth0"); err != nil {
		return err
	}

	// Home: NAT router, alice's and bob's laptops.
	if err := l.router(ctx, NodeHome, HomeWANIP, HomeLANGW+"/24", routerHome); err != nil {
		return err
	}
	laptops := []hostSpec{{name: NodeClient, ip: ClientIP}, {name: NodeClientBob, ip: ClientBobIP}}
	if l.opts.IPv6OnlyClient {
		laptops = laptops[1:] // alice is on the IPv6-only network (buildNAT64)
	}
	for _, h := range laptops {
		h.prefix, h.gw, h.bridgeNS, h.bridge, h.dns = "/24", HomeLANGW, NodeHome, "lan", PublicDNSIP
		if err := l.attach(ctx, h); err != nil {
			return err
		}
	}

	// Corporate: NAT router that admits nothing new inbound, connectors,
	// private hosts, corporate DNS, and a subnet published as a CIDR.
	if err := l.router(ctx, NodeCorp, CorpWANIP, CorpLANGW+"/24", routerCorp); err != nil {
		return err
	}
	for _, h := range []hostSpec{
		{name: NodeConnectorA, ip: ConnectorAIP},
		{name: NodeConnectorB, ip: ConnectorBIP},
		{name: NodeDB, ip: DBIP},
		{name: NodeWeb, ip: WebIP},
		{name: NodeCorpDNS, ip: CorpDNSIP},
	} {
		h.prefix, h.gw, h.bridgeNS, h.bridge, h.dns = "/24", CorpLANGW, NodeCorp, "lan", CorpDNSIP
		if err := l.attach(ctx, h); err != nil {
			return err
		}
	}
	if err := l.bridge(ctx, NodeCorp, "lab", SubnetGW+"/24"); err != nil {
		return err
	}
	if err := l.attach(ctx, hostSpec{name: NodeSubnetHost, ip: SubnetHostIP, prefix: "/24", gw: SubnetGW, bridgeNS: NodeCorp, bridge: "lab", dns: CorpDNSIP}); err != nil {
		return err
	}
	// Connectors answer ICMP echo for clients with unprivileged ping sockets.
	for _, c := range []string{NodeConnectorA, NodeConnectorB} {
		if err := l.sysctl(ctx, c, "net.ipv4.ping_group_range", "0 2147483647"); err != nil {
			return err
		}
	}
	if l.opts.ReachableConnectors {
		// Route the corporate LAN on the internet so that clients can reach
		// the connectors' host addresses; the corporate router admits only
		// UDP to the connectors (see applyRouter).
		if err := l.ipn(ctx, NodeInternet, "route", "add", CorpLANCIDR, "via", CorpWANIP); err != nil {
			return err
		}
	}
	return nil
}

// NamespaceHint tells a person how to enter the lab's namespaces.
func (l *Lab) NamespaceHint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Namespaces of lab %s (enter one with: sudo ip netns exec NS bash):\n", l.ID)
	for _, n := range l.Nodes() {
		fmt.Fprintf(&b, "  %-12s %-22s %s\n", n.Name, n.NS, n.IP)
	}
	return b.String()
}
