package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// addr6 gives a node an IPv6 address without duplicate address detection
// (usable at once) and, when via is set, an IPv6 default route.
func (l *Lab) addr6(ctx context.Context, node, dev, cidr, via string) error {
	if err := l.ipn(ctx, node, "addr", "add", cidr, "dev", dev, "nodad"); err != nil {
		return fmt.Errorf("IPv6 address of %s: %w", node, err)
	}
	if via != "" {
		if err := l.ipn(ctx, node, "-6", "route", "add", "default", "via", via); err != nil {
			return fmt.Errorf("IPv6 default route of %s: %w", node, err)
		}
	}
	return nil
}

// buildUnderlay6 makes the internet, the home LAN and the corporate LAN
// dual-stack (Options.Underlay6): the internet routes the home and
// corporate /64s to their routers, which forward IPv6 without NAT behind a
// stateful firewall (routerRuleset).
func (l *Lab) buildUnderlay6(ctx context.Context) error {
	if err := l.addr6(ctx, NodeInternet, "br0", Internet6GW+"/64", ""); err != nil {
		return err
	}
	for _, n := range []string{NodeInternet, NodeHome, NodeCorp} {
		if err := l.sysctl(ctx, n, "net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
	}
	for _, h := range []struct{ node, dev, ip, via string }{
		{NodeController, "eth0", Controller6IP, Internet6GW},
		{NodeRelay, "eth0", Relay6IP, Internet6GW},
		{NodePublicDNS, "eth0", PublicDNS6IP, Internet6GW},
		{NodeHome, "wan", HomeWAN6IP, Internet6GW},
		{NodeCorp, "wan", CorpWAN6IP, Internet6GW},
	} {
		if err := l.addr6(ctx, h.node, h.dev, h.ip+"/64", h.via); err != nil {
			return err
		}
	}
	if err := l.addr6(ctx, NodeHome, "lan", HomeLAN6GW+"/64", ""); err != nil {
		return err
	}
	home := []struct{ node, ip string }{{NodeClientBob, ClientBob6IP}}
	if !l.opts.IPv6OnlyClient {
		home = append(home, struct{ node, ip string }{NodeClient, Client6IP})
	}
	for _, h := range home {
		if err := l.addr6(ctx, h.node, "eth0", h.ip+"/64", HomeLAN6GW); err != nil {
			return err
		}
	}
	for _, c := range []string{NodeConnectorA, NodeConnectorB} {
		if err := l.ipn(ctx, c, "-6", "route", "add", "default", "via", CorpLAN6GW); err != nil {
			return fmt.Errorf("IPv6 default route of %s: %w", c, err)
		}
	}
	for _, r := range []struct{ to, via string }{{HomeLAN6CIDR, HomeWAN6IP}, {CorpLAN6CIDR, CorpWAN6IP}} {
		if err := l.ipn(ctx, NodeInternet, "-6", "route", "add", r.to, "via", r.via); err != nil {
			return fmt.Errorf("internet IPv6 route to %s: %w", r.to, err)
		}
	}
	return nil
}

// buildNAT64 puts alice's laptop on an IPv6-only network behind a NAT64
// router (Options.IPv6OnlyClient): tayga translates NAT64Prefix to its
// IPv4 pool, which the router masquerades to the internet like a home
// router; the router also runs the DNS64 resolver the laptop uses.
func (l *Lab) buildNAT64(ctx context.Context) error {
	tayga, err := exec.LookPath("tayga")
	if err != nil {
		return fmt.Errorf("the IPv6-only client lab needs tayga (NAT64): %w (apt-get install tayga; scripts/install-deps.sh)", err)
	}
	if err := l.router(ctx, NodeNAT64, NAT64WANIP, NAT64LANGW+"/64", routerHome); err != nil {
		return err
	}
	if err := l.sysctl(ctx, NodeNAT64, "net.ipv6.conf.all.forwarding", "1"); err != nil {
		return err
	}
	dir := filepath.Join(l.Dir, "tayga")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tayga dir: %w", err)
	}
	conf := filepath.Join(dir, "tayga.conf")
	body := fmt.Sprintf("tun-device nat64\nipv4-addr %s\nprefix %s\ndynamic-pool %s\ndata-dir %s\n", NAT64TaygaIP, NAT64Prefix, NAT64PoolCIDR, dir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return fmt.Errorf("tayga config: %w", err)
	}
	if _, err := l.Exec(ctx, NodeNAT64, tayga, "--mktun", "-c", conf); err != nil {
		return fmt.Errorf("tayga --mktun: %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "nat64", "up"},
		{"route", "add", NAT64PoolCIDR, "dev", "nat64"},
		{"-6", "route", "add", NAT64Prefix, "dev", "nat64"},
	} {
		if err := l.ipn(ctx, NodeNAT64, args...); err != nil {
			return fmt.Errorf("NAT64 router: %w", err)
		}
	}
	// -d: stay in the foreground, log to stderr (the program's log).
	if _, err := l.Spawn(ProgTayga, NodeNAT64, nil, tayga, "-d", "-c", conf); err != nil {
		return err
	}
	dns64, err := l.Spawn(ProgDNS64, NodeNAT64, nil, l.Bin("postern-lab"), "dns64", "--listen", "["+NAT64LANGW+"]:53",
		"--prefix", NAT64Prefix, "--upstream", PublicDNSIP+":53")
	if err != nil {
		return err
	}
	if err := l.waitListening(ctx, NodeNAT64, "udp", "53", 10*time.Second, dns64); err != nil {
		return err
	}
	// Alice's laptop: IPv6 only, the DNS64 as its resolver.
	n, err := l.addNamespace(ctx, NodeClient, NAT64LANGW)
	if err != nil {
		return err
	}
	n.IP = ClientV6OnlyIP
	if err := l.veth(ctx, NodeClient, "eth0", NodeNAT64, "v-"+NodeClient); err != nil {
		return err
	}
	if err := l.ipn(ctx, NodeNAT64, "link", "set", "v-"+NodeClient, "master", "lan", "up"); err != nil {
		return err
	}
	if err := l.ipn(ctx, NodeClient, "link", "set", "eth0", "up"); err != nil {
		return err
	}
	return l.addr6(ctx, NodeClient, "eth0", ClientV6OnlyIP+"/64", NAT64LANGW)
}

// dualStack is a DNS record's addresses: v4, and v6 too with Underlay6.
func (l *Lab) dualStack(v4, v6 string) string {
	if l.opts.Underlay6 {
		return v4 + "," + v6
	}
	return v4
}
