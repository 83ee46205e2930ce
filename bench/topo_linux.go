package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"postern.dev/postern/internal/testenv/netnstest"
)

// Node roles of the topology.
const (
	NodeClient  = "cli"   // client host: direct reference, Postern direct, wireguard-go, OpenVPN, ssh -L
	NodeClient2 = "cli2"  // second client host whose direct UDP to the server is blocked: Postern relayed
	NodeServer  = "srv"   // server host: iperf3, echo server, sshd, connector, tunnel servers
	NodeInfra   = "infra" // controller, relay, upstream DNS
)

// Addresses (198.18.0.0/15 only).
const (
	ClientIP     = "198.18.0.1" // cli eth0, link to srv
	ServerIP     = "198.18.0.2" // srv eth0
	Client2IP    = "198.18.6.1" // cli2 eth0, link to srv (UDP dropped)
	Server2IP    = "198.18.6.2" // srv eth2
	ClientUpIP   = "198.18.1.1" // cli up0, link to infra
	InfraIP      = "198.18.1.2" // infra c1: controller, relay, DNS
	Client2UpIP  = "198.18.7.1" // cli2 up0
	InfraC2IP    = "198.18.7.2" // infra c2
	ServerUpIP   = "198.18.2.1" // srv up0, link to infra
	InfraSrvIP   = "198.18.2.2" // infra s1
	WGClientIP   = "198.18.4.1" // wireguard-go tunnel addresses
	WGServerIP   = "198.18.4.2"
	OVPNNet      = "198.18.5.0" // OpenVPN tunnel subnet; the server is .1
	OVPNServerIP = "198.18.5.1"
	ExtraWebIP   = "198.18.1.80" // the upstream DNS's answer for a public name
)

// link is one veth end the harness made (for tbf).
type link struct{ ns, dev string }

// topology is the set of namespaces of one run.
type topology struct {
	id    string
	nodes map[string]string // role -> namespace
	order []string
	links []link
}

func newTopology() *topology {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return &topology{id: "pb" + hex.EncodeToString(b), nodes: map[string]string{}}
}

func (t *topology) ns(role string) string { return t.nodes[role] }

// build creates the namespaces, veths, addresses, routes and the nftables
// rule that blocks direct UDP between cli2 and the server.
func (t *topology) build(ctx context.Context) error {
	for _, role := range []string{NodeClient, NodeClient2, NodeServer, NodeInfra} {
		if err := t.addNS(ctx, role); err != nil {
			return err
		}
	}
	type l struct{ a, adev, aip, b, bdev, bip string }
	for _, x := range []l{
		{NodeClient, "eth0", ClientIP, NodeServer, "eth0", ServerIP},
		{NodeClient2, "eth0", Client2IP, NodeServer, "eth2", Server2IP},
		{NodeClient, "up0", ClientUpIP, NodeInfra, "c1", InfraIP},
		{NodeClient2, "up0", Client2UpIP, NodeInfra, "c2", InfraC2IP},
		{NodeServer, "up0", ServerUpIP, NodeInfra, "s1", InfraSrvIP},
	} {
		if err := t.veth(ctx, x.a, x.adev, x.aip, x.b, x.bdev, x.bip); err != nil {
			return err
		}
	}
	// Everyone reaches the infrastructure host's 198.18.1.2 through their
	// own link to it; infra does not forward, so there is no other path.
	for _, r := range []struct{ role, via string }{{NodeClient2, InfraC2IP}, {NodeServer, InfraSrvIP}} {
		if _, err := run(ctx, nil, "ip", "-n", t.ns(r.role), "route", "add", InfraIP+"/32", "via", r.via); err != nil {
			return fmt.Errorf("route to infra from %s: %w", r.role, err)
		}
	}
	// The server host runs the connector, which dials the private servers
	// and closes first when the client does: it gets the settings
	// docs/connector.md asks of a connector host that opens many short
	// connections (without them its ephemeral ports run out in TIME_WAIT
	// at about 470 new connections/s to one service).
	for _, role := range []string{NodeClient, NodeClient2, NodeServer} {
		for _, kv := range [][2]string{
			{"net.ipv4.tcp_tw_reuse", "1"},
			{"net.ipv4.ip_local_port_range", "10000 65000"},
		} {
			if _, err := nsRun(ctx, t.ns(role), nil, "sysctl", "-q", "-w", kv[0]+"="+kv[1]); err != nil {
				return fmt.Errorf("sysctl in %s: %w", role, err)
			}
		}
	}
	if _, err := nsRun(ctx, t.ns(NodeServer), nil, "sysctl", "-q", "-w", "net.core.somaxconn=8192"); err != nil {
		return fmt.Errorf("sysctl in srv: %w", err)
	}
	// Direct UDP between cli2 and the server is dropped, both ways: Postern
	// on cli2 can only use the relay.
	rules := fmt.Sprintf(`table inet pbench {
	chain output { type filter hook output priority 0; policy accept; ip daddr %s meta l4proto udp drop; }
	chain input { type filter hook input priority 0; policy accept; ip saddr %s meta l4proto udp drop; }
}
`, Server2IP, Server2IP)
	if _, err := nsRun(ctx, t.ns(NodeClient2), strings.NewReader(rules), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nft in cli2: %w", err)
	}
	return nil
}

func (t *topology) addNS(ctx context.Context, role string) error {
	ns := t.id + "-" + role
	// Written before anything runs there, so a program that rewrites
	// /etc/resolv.conf (posternd) writes this file, never the machine's.
	rc := "# written by postern-bench " + t.id + "\nnameserver " + InfraIP + "\noptions timeout:1 attempts:1\n"
	hosts := "127.0.0.1 localhost\n::1 localhost\n"
	if role == NodeServer {
		// The connector resolves the resource name like any private host.
		hosts += ServerIP + " " + ResourceName + "\n"
	}
	if err := netnstest.Create(ctx, ns, rc, hosts); err != nil {
		return err
	}
	t.nodes[role] = ns
	t.order = append(t.order, ns)
	return nil
}

// veth makes a pair directly between two harness namespaces under unique
// temporary names (never in the machine's own namespace), renames the ends
// inside their namespaces, and addresses them.
func (t *topology) veth(ctx context.Context, a, adev, aip, b, bdev, bip string) error {
	if err := netnstest.Veth(ctx, t.ns(a), adev, t.ns(b), bdev); err != nil {
		return fmt.Errorf("veth %s-%s: %w", a, b, err)
	}
	for _, e := range []struct{ role, dev, ip string }{{a, adev, aip}, {b, bdev, bip}} {
		ns := t.ns(e.role)
		for _, args := range [][]string{
			{"addr", "add", e.ip + "/24", "dev", e.dev},
			{"link", "set", e.dev, "up"},
		} {
			if _, err := run(ctx, nil, append([]string{"ip", "-n", ns}, args...)...); err != nil {
				return fmt.Errorf("veth %s in %s: %w", e.dev, e.role, err)
			}
		}
		t.links = append(t.links, link{ns: ns, dev: e.dev})
	}
	return nil
}

// setRateLimit puts (or removes) a tbf qdisc of rate on every veth end.
func (t *topology) setRateLimit(ctx context.Context, rate string) error {
	var errs []error
	for _, l := range t.links {
		var err error
		if rate == "" {
			_, err = run(ctx, nil, "ip", "netns", "exec", l.ns, "tc", "qdisc", "del", "dev", l.dev, "root")
		} else {
			_, err = run(ctx, nil, "ip", "netns", "exec", l.ns, "tc", "qdisc", "replace", "dev", l.dev, "root",
				"tbf", "rate", rate, "burst", "256kb", "latency", "10ms")
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// close kills whatever still runs in the namespaces (all of it the
// harness's), deletes them and their /etc/netns directories.
func (t *topology) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for i := len(t.order) - 1; i >= 0; i-- {
		if err := netnstest.Teardown(ctx, t.order[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
