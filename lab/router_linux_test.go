package lab

import (
	"strings"
	"testing"
)

func TestRouterRuleset(t *testing.T) {
	l := &Lab{opts: Options{ReachableConnectors: false}}
	home := &routerState{name: RouterHome, kind: routerHome}
	rs := l.routerRuleset(home)
	if !strings.Contains(rs, "oifname \"wan\" masquerade\n") || strings.Contains(rs, "iifname \"wan\" drop") {
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
