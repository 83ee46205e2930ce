//go:build linux

package e2e

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/lab"
)

// connector6 matches the address a lab server reports for a connection
// from a connector over IPv6.
var connector6 = regexp.MustCompile(`from \[(` + regexp.QuoteMeta(lab.ConnectorA6IP) + `|` + regexp.QuoteMeta(lab.ConnectorB6IP) + `)\]:\d+`)

// pingOK accepts a ping that lost at most one of two echoes (the first
// echo may open the flow while the connector path settles).
func pingOK(out string) bool {
	return strings.Contains(out, " 0% packet loss") || strings.Contains(out, " 50% packet loss")
}

// IPv6 is on by default on alice's laptop: names get synthetic AAAA
// answers, and the IPv6 synthetic range and the IPv6 resources are routed
// into the TUN.
func TestIPv6DefaultRoutesAndAAAA(t *testing.T) {
	for _, name := range []string{lab.DBName, lab.DB6Name, lab.WebName} {
		out := firstLine(must(t, lab.NodeClient, 10*time.Second, nil, "dig", "+short", "+time=3", "AAAA", name))
		a, err := netip.ParseAddr(strings.TrimSpace(out))
		if err != nil || !dnsproxy.DefaultV6Range.Contains(a) {
			t.Fatalf("AAAA %s on alice's laptop = %q, want an address of %s", name, out, dnsproxy.DefaultV6Range)
		}
	}
	routes := must(t, lab.NodeClient, 10*time.Second, nil, "ip", "-6", "route", "show", "dev", "postern0")
	for _, want := range []string{dnsproxy.DefaultV6Range.String(), lab.DB6IP, lab.Subnet6CIDR} {
		if !strings.Contains(routes, want+" ") {
			t.Errorf("IPv6 route %s missing on postern0:\n%s", want, routes)
		}
	}
}

// ssh, psql and ping over IPv6: to the db host's IPv6 address resource, to
// its AAAA-only name, and to its dual-stack name over the synthetic AAAA.
func TestIPv6SSHPsqlPing(t *testing.T) {
	l := getLab(t)
	for _, host := range []string{lab.DB6IP, lab.DB6Name} {
		if got := strings.TrimSpace(must(t, lab.NodeClient, 20*time.Second, nil, sshArgs("-6", host, "hostname")...)); got != "db" {
			t.Fatalf("ssh -6 %s hostname = %q, want db", host, got)
		}
	}
	if got := strings.TrimSpace(must(t, lab.NodeClient, 20*time.Second, nil, sshArgs("-6", lab.DBName, "echo $SSH_CONNECTION")...)); !strings.HasPrefix(got, lab.ConnectorA6IP+" ") && !strings.HasPrefix(got, lab.ConnectorB6IP+" ") {
		t.Errorf("ssh -6 %s: the db host saw SSH_CONNECTION %q, want a connector's IPv6 address (db has an AAAA record)", lab.DBName, got)
	}
	out := must(t, lab.NodeClient, 20*time.Second, pgEnv(l), "psql", "-h", lab.DB6IP, "-U", lab.PGUser, "-d", lab.PGDatabase,
		"-tAc", "select string_agg(name, ',' order by name) || ' ' || host(inet_client_addr()) from servers")
	if f := strings.Fields(out); len(f) != 2 || f[0] != "app,db,web" || (f[1] != lab.ConnectorA6IP && f[1] != lab.ConnectorB6IP) {
		t.Fatalf("psql over IPv6 = %q, want the servers and a connector's IPv6 address", out)
	}
	for _, host := range []string{lab.DB6IP, lab.DB6Name, lab.SubnetHost6IP} {
		if out := must(t, lab.NodeClient, 15*time.Second, nil, "ping", "-6", "-c", "2", "-W", "5", host); !pingOK(out) {
			t.Fatalf("ping -6 %s:\n%s", host, out)
		}
	}
}

// curl over IPv6: an address inside the IPv6 CIDR resource, an AAAA-only
// name under the web wildcard, and an IPv4-only server reached over the
// synthetic AAAA (the connector dials it over IPv4).
func TestIPv6Curl(t *testing.T) {
	out := must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://["+lab.SubnetHost6IP+"]/", "-g")...)
	if !strings.Contains(out, "Hello from "+lab.SubnetAppName) || !connector6.MatchString(out) {
		t.Fatalf("curl http://[%s]/ (want the app host, reached from a connector's IPv6 address):\n%s", lab.SubnetHost6IP, out)
	}
	out = must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+lab.Web6Name+"/", "-6")...)
	if !strings.Contains(out, "Hello from "+lab.WebName) || !connector6.MatchString(out) {
		t.Fatalf("curl -6 http://%s/ (AAAA only):\n%s", lab.Web6Name, out)
	}
	out = must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+lab.WebName+"/", "-6")...)
	if !strings.Contains(out, "Hello from "+lab.WebName) || !regexp.MustCompile(`from 198\.51\.100\.1[12]:\d+`).MatchString(out) {
		t.Fatalf("curl -6 http://%s/ (IPv4-only server behind a synthetic AAAA):\n%s", lab.WebName, out)
	}
}

// Bob (sales) has none of the IPv6 resources: nothing of them is routed on
// his laptop, and the web wildcard alone does not open db6 to him.
func TestIPv6ResourcesRefusedToBob(t *testing.T) {
	routes := must(t, lab.NodeClientBob, 10*time.Second, nil, "ip", "-6", "route", "show", "dev", "postern0")
	if strings.Contains(routes, lab.Subnet6CIDR) || strings.Contains(routes, lab.DB6IP) {
		t.Fatalf("alice's IPv6 resources are routed on bob's laptop:\n%s", routes)
	}
	if r := run(t, lab.NodeClientBob, 20*time.Second, nil, curlArgs("http://["+lab.SubnetHost6IP+"]/", "-g")...); r.err == nil {
		t.Fatalf("bob reached the IPv6 subnet:\n%s", r.out)
	}
	if r := run(t, lab.NodeClientBob, 20*time.Second, nil, sshArgs("-6", lab.DB6Name, "hostname")...); r.err == nil {
		t.Fatalf("bob reached ssh on %s:\n%s", lab.DB6Name, r.out)
	}
}
