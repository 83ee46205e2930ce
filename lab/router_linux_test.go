package lab

import (
	"os/exec"
	"strings"
	"testing"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

func TestRouterRuleset(t *testing.T) {
	l := &Lab{opts: Options{ReachableConnectors: false}}
	home := &routerState{name: RouterHome, kind: routerHome}
	rs := l.routerRuleset(home)
	if !strings.Contains(rs, "oifname \"wan\" meta nfproto ipv4 masquerade\n") || strings.Contains(rs, "iifname \"wan\" drop") {
		t.Fatalf("plain home router:\n%s", rs)
	}
	if !strings.Contains(rs, "hook input") || !strings.Contains(rs, "iifname \"wan\" ct state new drop") {
		t.Fatalf("home router accepts unsolicited traffic to itself (breaks hole punching):\n%s", rs)
	}
	home.f = routerFaults{blockUDP: true, symmetric: true, dropPct: 7}
	rs = l.routerRuleset(home)
	for _, want := range []string{"jump udpblock", "masquerade random", "numgen random mod 100 < 7 drop"} {
		if !strings.Contains(rs, want) {
			t.Errorf("faulty home router lacks %q:\n%s", want, rs)
		}
	}
	home.f = routerFaults{dropPct: 100}
	if rs = l.routerRuleset(home); strings.Contains(rs, "numgen") || !strings.Contains(rs, "iifname \"wan\" drop") {
		t.Errorf("100%% loss:\n%s", rs)
	}
	corp := &routerState{name: RouterCorp, kind: routerCorp}
	rs = l.routerRuleset(corp)
	if !strings.Contains(rs, "ct state established,related accept") || !strings.Contains(rs, "iifname \"wan\" drop") || strings.Contains(rs, ConnectorAIP) {
		t.Fatalf("corporate router:\n%s", rs)
	}
	l.opts.ReachableConnectors = true
	if rs = l.routerRuleset(corp); !strings.Contains(rs, ConnectorAIP) {
		t.Fatalf("reachable corporate router:\n%s", rs)
	}
}

// TestRouterNATKinds: each NAT kind's ruleset, and a bad kind refused.
func TestRouterNATKinds(t *testing.T) {
	l := &Lab{}
	home := &routerState{name: RouterHome, kind: routerHome}
	home.f.nat = NATPortClash
	if rs := l.routerRuleset(home); strings.Contains(rs, "hook input") || !strings.Contains(rs, "oifname \"wan\" meta nfproto ipv4 masquerade\n") {
		t.Errorf("port-clash router keeps its input firewall or lost masquerade:\n%s", rs)
	}
	home.f.nat = NATFullCone
	rs := l.routerRuleset(home)
	for _, want := range []string{"masquerade persistent", "hook prerouting", "meta l4proto udp dnat ip to " + ClientIP, "ct state new drop"} {
		if !strings.Contains(rs, want) {
			t.Errorf("full-cone home router lacks %q:\n%s", want, rs)
		}
	}
	corp := &routerState{name: RouterCorp, kind: routerCorp, f: routerFaults{nat: NATFullCone}}
	rs = l.routerRuleset(corp)
	if !strings.Contains(rs, "dnat ip to "+ConnectorAIP) || !strings.Contains(rs, "ct status dnat accept") {
		t.Errorf("full-cone corporate router:\n%s", rs)
	}
	if strings.Index(rs, "ct status dnat accept") > strings.Index(rs, "iifname \"wan\" drop") {
		t.Errorf("full-cone corporate router drops forwarded inbound UDP before accepting it:\n%s", rs)
	}
	home.f.nat = NATSymmetric
	if rs := l.routerRuleset(home); !strings.Contains(rs, "masquerade random") {
		t.Errorf("symmetric router:\n%s", rs)
	}
	if _, err := ParseNATKind("cone"); err == nil || !strings.Contains(err.Error(), "cone") {
		t.Errorf("ParseNATKind(cone) = %v", err)
	}
	for _, k := range []NATKind{NATEIM, NATPortClash, NATFullCone, NATSymmetric} {
		if got, err := ParseNATKind(string(k)); err != nil || got != k {
			t.Errorf("ParseNATKind(%s) = %v, %v", k, got, err)
		}
	}
}

// TestRouterRulesetsApply: nftables accepts every router ruleset (each NAT
// kind, home and corporate, with faults), checked in a throwaway namespace.
func TestRouterRulesetsApply(t *testing.T) {
	testenv.RequireRoot(t, "a network namespace")
	ns := netnstest.New(t, "pstnat", "")
	for _, rk := range []routerKind{routerHome, routerCorp} {
		for _, nk := range []NATKind{"", NATEIM, NATPortClash, NATFullCone, NATSymmetric} {
			for _, f := range []routerFaults{{nat: nk}, {nat: nk, blockUDP: true, dropPct: 5}} {
				l := &Lab{opts: Options{ReachableConnectors: rk == routerCorp}}
				rules := l.routerRuleset(&routerState{name: "r", kind: rk, f: f})
				cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(rules)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("router kind %d, %+v: nft refused: %v %s\n%s", rk, f, err, out, rules)
				}
			}
		}
	}
}

// With the IPv6 underlay, routers translate IPv4 only, and the home router
// keeps new inbound IPv6 out (a CPE's stateful firewall); the plain lab has
// no IPv6 rules at home.
func TestRouterRulesetUnderlay6(t *testing.T) {
	home := &routerState{name: RouterHome, kind: routerHome}
	plain := (&Lab{}).routerRuleset(home)
	if strings.Contains(plain, "nfproto ipv6") {
		t.Fatalf("IPv4-only lab has IPv6 rules:\n%s", plain)
	}
	rs := (&Lab{opts: Options{Underlay6: true}}).routerRuleset(home)
	for _, want := range []string{
		"iifname \"wan\" meta nfproto ipv6 ct state established,related accept\n",
		"iifname \"wan\" meta nfproto ipv6 drop\n",
		"oifname \"wan\" meta nfproto ipv4 masquerade\n",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("dual-stack home router lacks %q:\n%s", want, rs)
		}
	}
	if strings.Contains(rs, "oifname \"wan\" masquerade") {
		t.Errorf("dual-stack home router translates IPv6:\n%s", rs)
	}
}
