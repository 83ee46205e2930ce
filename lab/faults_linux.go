package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Stop ends a program gracefully (SIGTERM, then SIGKILL after 5 s).
func (l *Lab) Stop(name string) error {
	p, err := l.Proc(name)
	if err != nil {
		return err
	}
	return p.Stop(5 * time.Second)
}

// Kill ends a program at once with SIGKILL, as a crash or power loss would.
func (l *Lab) Kill(name string) error {
	p, err := l.Proc(name)
	if err != nil {
		return err
	}
	return p.kill()
}

// StartProgram starts a stopped program again with the same arguments.
func (l *Lab) StartProgram(name string) error {
	p, err := l.Proc(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return p.Start()
}

// Restart stops a program (if it runs) and starts it again. The controller
// is waited for until it answers again.
func (l *Lab) Restart(ctx context.Context, name string) error {
	if err := l.Stop(name); err != nil {
		return err
	}
	if err := l.StartProgram(name); err != nil {
		return err
	}
	if name == ProgController {
		p, _ := l.Proc(name)
		return l.WaitController(ctx, p)
	}
	return nil
}

// BlockUDP drops (on) or passes (off) every forwarded UDP packet at a
// router, except DNS (port 53), like a restrictive firewall.
func (l *Lab) BlockUDP(ctx context.Context, router string, on bool) error {
	return l.changeRouter(ctx, router, func(f *routerFaults) { f.blockUDP = on })
}

// BlockAll drops (on) or passes (off) all traffic through a router's WAN.
func (l *Lab) BlockAll(ctx context.Context, router string, on bool) error {
	return l.changeRouter(ctx, router, func(f *routerFaults) { f.blockAll = on })
}

// SymmetricNAT switches a router's masquerade to random ports per mapping
// ("masquerade random", a symmetric NAT) or back to port-preserving. Existing
// mappings are flushed so the change applies at once.
func (l *Lab) SymmetricNAT(ctx context.Context, router string, on bool) error {
	if err := l.changeRouter(ctx, router, func(f *routerFaults) { f.symmetric = on }); err != nil {
		return err
	}
	return l.FlushConntrack(router)
}

// SetNAT gives a router another NAT behaviour (NATEIM is the default);
// existing mappings are flushed so the change applies at once.
func (l *Lab) SetNAT(ctx context.Context, router string, kind NATKind) error {
	if _, err := ParseNATKind(string(kind)); err != nil {
		return err
	}
	if err := l.changeRouter(ctx, router, func(f *routerFaults) { f.nat = kind }); err != nil {
		return err
	}
	return l.FlushConntrack(router)
}

// DropPercent drops pct percent (0-100) of the packets crossing a router's
// WAN in each direction; 0 stops dropping.
func (l *Lab) DropPercent(ctx context.Context, router string, pct int) error {
	if pct < 0 || pct > 100 {
		return fmt.Errorf("drop percent %d: want 0..100", pct)
	}
	return l.changeRouter(ctx, router, func(f *routerFaults) { f.dropPct = pct })
}

// ClearFaults removes every fault from both routers.
func (l *Lab) ClearFaults(ctx context.Context) error {
	for _, r := range []string{RouterHome, RouterCorp} {
		if err := l.changeRouter(ctx, r, func(f *routerFaults) { *f = routerFaults{} }); err != nil {
			return err
		}
	}
	return nil
}

// ChangeClientAddress roams a client: it gets a new LAN address and the
// home router a new public address, so every peer sees the client come from
// a new ip:port (like a laptop moving from one Wi-Fi to another). It
// returns the new public address.
func (l *Lab) ChangeClientAddress(ctx context.Context, node string) (netip.Addr, error) {
	n, err := l.Node(node)
	if err != nil {
		return netip.Addr{}, err
	}
	if node != NodeClient && node != NodeClientBob {
		return netip.Addr{}, fmt.Errorf("change address of %s: only client nodes roam", node)
	}
	home, _ := l.Node(NodeHome)
	l.mu.Lock()
	oldLAN, oldWAN := netip.MustParseAddr(n.IP), netip.MustParseAddr(home.IP)
	newLAN, newWAN := nextInSubnet(oldLAN), nextInSubnet(oldWAN)
	l.mu.Unlock()
	for _, s := range [][2]string{{NodeHome, "wan"}, {node, "eth0"}} {
		if err := l.sysctl(ctx, s[0], "net.ipv4.conf."+s[1]+".promote_secondaries", "1"); err != nil {
			return netip.Addr{}, err
		}
	}
	// New addresses first, then drop the old ones: the old NAT mappings die
	// with the old public address (masquerade forgets them).
	steps := [][]string{
		{NodeHome, "addr", "add", newWAN.String() + "/24", "dev", "wan"},
		{NodeHome, "route", "replace", "default", "via", InternetGW, "src", newWAN.String()},
		{NodeHome, "addr", "del", oldWAN.String() + "/24", "dev", "wan"},
		{NodeHome, "route", "replace", "default", "via", InternetGW},
		{node, "addr", "add", newLAN.String() + "/24", "dev", "eth0"},
		{node, "addr", "del", oldLAN.String() + "/24", "dev", "eth0"},
		{node, "route", "replace", "default", "via", HomeLANGW},
	}
	for _, s := range steps {
		if err := l.ipn(ctx, s[0], s[1:]...); err != nil {
			return netip.Addr{}, fmt.Errorf("change address of %s: %w", node, err)
		}
	}
	if err := l.FlushConntrack(RouterHome); err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	n.IP, home.IP = newLAN.String(), newWAN.String()
	l.mu.Unlock()
	return newWAN, nil
}

// nextInSubnet picks the next host address in the same /24, skipping .0,
// .1 (gateways) and .255, and the addresses the plan already uses.
func nextInSubnet(a netip.Addr) netip.Addr {
	b := a.As4()
	used := map[string]bool{ClientIP: true, ClientBobIP: true, HomeWANIP: true, CorpWANIP: true,
		ControllerIP: true, ControllerBIP: true, RelayIP: true, PublicDNSIP: true, PublicWebIP: true}
	for i := 0; i < 254; i++ {
		b[3]++
		if b[3] < 2 || b[3] == 255 {
			continue
		}
		next := netip.AddrFrom4(b)
		if !used[next.String()] {
			return next
		}
	}
	return a
}

// RateLimit shapes a router's internet link to kbit kilobits per second in
// each direction (tc tbf on the WAN port for upload and on the LAN bridge
// for download); 0 removes the limit.
func (l *Lab) RateLimit(ctx context.Context, router string, kbit int) error {
	if _, err := l.routerByName(router); err != nil {
		return err
	}
	if kbit < 0 {
		return fmt.Errorf("rate limit %d kbit/s: want >= 0", kbit)
	}
	for _, dev := range []string{"wan", "lan"} {
		var args []string
		if kbit == 0 {
			args = []string{"tc", "qdisc", "del", "dev", dev, "root"}
		} else {
			burst := max(kbit/50, 32) // 20 ms worth, at least 32 kbit
			args = []string{"tc", "qdisc", "replace", "dev", dev, "root", "tbf",
				"rate", fmt.Sprintf("%dkbit", kbit), "burst", fmt.Sprintf("%dkbit", burst), "latency", "100ms"}
		}
		if out, err := l.Exec(ctx, router, args...); err != nil {
			if kbit == 0 && (strings.Contains(out, "No such file") || strings.Contains(out, "handle of zero")) {
				continue // no limit was set
			}
			return fmt.Errorf("rate limit on %s/%s: %w", router, dev, err)
		}
	}
	return nil
}
