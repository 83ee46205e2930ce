//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/lab"
	"postern.dev/postern/localapi"
)

// A name resource: real OpenSSH, real PostgreSQL and ping by name.
func TestNameResource(t *testing.T) {
	l := getLab(t)
	addr := must(t, lab.NodeClient, 10*time.Second, nil, "dig", "+short", "+time=3", lab.DBName)
	if !inSynthetic(firstLine(addr)) {
		t.Fatalf("%s resolved to %q on alice's laptop, want a synthetic address (100.96.0.0/12)", lab.DBName, addr)
	}
	if got := strings.TrimSpace(must(t, lab.NodeClient, 20*time.Second, nil, sshArgs(lab.DBName, "hostname")...)); got != "db" {
		t.Fatalf("ssh %s hostname = %q, want db", lab.DBName, got)
	}
	out := must(t, lab.NodeClient, 20*time.Second, pgEnv(l), "psql", "-h", lab.DBName, "-U", lab.PGUser, "-d", lab.PGDatabase,
		"-tAc", "select string_agg(name, ',' order by name) from servers")
	if strings.TrimSpace(out) != "app,db,web" {
		t.Fatalf("psql query = %q", out)
	}
	out = must(t, lab.NodeClient, 15*time.Second, nil, "ping", "-c", "2", "-W", "5", lab.DBName)
	if !strings.Contains(out, " 0% packet loss") && !strings.Contains(out, " 50% packet loss") {
		t.Fatalf("ping %s:\n%s", lab.DBName, out)
	}
}

// A wildcard name resource: *.corp.internal on tcp/80.
func TestWildcardResource(t *testing.T) {
	for _, name := range []string{lab.WebName, lab.IntranetName} {
		out := must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+name+"/")...)
		if !strings.Contains(out, "Hello from "+lab.WebName) || !strings.Contains(out, "as "+name) {
			t.Fatalf("curl http://%s/:\n%s", name, out)
		}
	}
}

// An address inside a CIDR resource, and an address resource for UDP (DNS).
func TestCIDRAndAddressResources(t *testing.T) {
	out := must(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+lab.SubnetHostIP+"/")...)
	if !strings.Contains(out, "Hello from "+lab.SubnetAppName) {
		t.Fatalf("curl http://%s/:\n%s", lab.SubnetHostIP, out)
	}
	out = must(t, lab.NodeClient, 15*time.Second, nil, "ping", "-c", "2", "-W", "5", lab.SubnetHostIP)
	if !strings.Contains(out, " 0% packet loss") && !strings.Contains(out, " 50% packet loss") {
		t.Fatalf("ping %s:\n%s", lab.SubnetHostIP, out)
	}
	got := strings.TrimSpace(must(t, lab.NodeClient, 15*time.Second, nil, "dig", "+short", "+time=3", "@"+lab.CorpDNSIP, lab.DBName))
	if got != lab.DBIP {
		t.Fatalf("dig @%s %s through the tunnel = %q, want %s", lab.CorpDNSIP, lab.DBName, got, lab.DBIP)
	}
}

// Names that are no resource still resolve through the upstream resolver,
// and their traffic stays off the tunnel (split tunnel).
func TestPublicNamesResolveUpstream(t *testing.T) {
	got := strings.TrimSpace(must(t, lab.NodeClient, 15*time.Second, nil, "dig", "+short", "+time=3", lab.PublicName))
	if got != lab.PublicWebIP {
		t.Fatalf("dig %s on alice's laptop = %q, want %s", lab.PublicName, got, lab.PublicWebIP)
	}
	out := must(t, lab.NodeClient, 15*time.Second, nil, curlArgs("http://"+lab.PublicName+"/")...)
	if !regexp.MustCompile(`from 203\.0\.113\.\d+:\d+`).MatchString(out) {
		t.Fatalf("www.example.com did not see the home NAT's public address:\n%s", out)
	}
	// A name that exists nowhere is NXDOMAIN, not a synthetic address.
	out = run(t, lab.NodeClient, 15*time.Second, nil, "dig", "+time=3", "nothing-here.example.com").out
	if !strings.Contains(out, "NXDOMAIN") && !strings.Contains(out, "REFUSED") {
		t.Fatalf("dig nothing-here.example.com:\n%s", out)
	}
}

// A port outside the resource's ports is refused at once, not after a hang.
func TestPortOutsideResourceRefusedAtOnce(t *testing.T) {
	r := run(t, lab.NodeClient, 20*time.Second, nil, curlArgs("http://"+lab.DBName+":8080/")...)
	if r.err == nil {
		t.Fatalf("curl to %s:8080 (not a resource port) succeeded:\n%s", lab.DBName, r.out)
	}
	if r.elapsed > 3*time.Second {
		t.Fatalf("curl to a port outside the resource took %s to fail (want a refusal at once): %s", r.elapsed, r.out)
	}
	r = run(t, lab.NodeClient, 20*time.Second, nil, sshArgs("-p", "2222", lab.DBName, "true")...)
	if r.err == nil || r.elapsed > 3*time.Second || !strings.Contains(strings.ToLower(r.out), "refused") {
		t.Fatalf("ssh -p 2222 %s: err %v after %s, want \"Connection refused\" at once:\n%s", lab.DBName, r.err, r.elapsed, r.out)
	}
}

// Bob (group sales) may use the web wildcard only: db and the subnet are
// refused, the web works (so the refusal is policy, not a broken client).
func TestUserOutsideGroupsRefused(t *testing.T) {
	l := getLab(t)
	out := must(t, lab.NodeClientBob, 20*time.Second, nil, curlArgs("http://"+lab.WebName+"/")...)
	if !strings.Contains(out, "Hello from "+lab.WebName) {
		t.Fatalf("bob's curl http://%s/:\n%s", lab.WebName, out)
	}
	r := run(t, lab.NodeClientBob, 20*time.Second, nil, sshArgs(lab.DBName, "hostname")...)
	if r.err == nil {
		t.Fatalf("bob reached ssh on %s:\n%s", lab.DBName, r.out)
	}
	if r.elapsed > 5*time.Second {
		t.Errorf("bob's ssh took %s to be refused", r.elapsed)
	}
	r = run(t, lab.NodeClientBob, 20*time.Second, pgEnv(l), "psql", "-h", lab.DBName, "-U", lab.PGUser, "-d", lab.PGDatabase, "-c", "select 1")
	if r.err == nil {
		t.Fatalf("bob reached PostgreSQL on %s:\n%s", lab.DBName, r.out)
	}
	r = run(t, lab.NodeClientBob, 20*time.Second, nil, curlArgs("http://"+lab.SubnetHostIP+"/", "--max-time", "5")...)
	if r.err == nil {
		t.Fatalf("bob reached %s in a CIDR resource of engineering:\n%s", lab.SubnetHostIP, r.out)
	}
	var res []localapi.Resource
	ctxOut := must(t, lab.NodeClientBob, 10*time.Second, nil, l.Bin("postern"), "--socket", l.Socket(lab.NodeClientBob), "resources", "--json")
	if err := json.Unmarshal([]byte(ctxOut), &res); err != nil {
		t.Fatalf("postern resources --json: %v: %s", err, ctxOut)
	}
	for _, r := range res {
		if r.Name == "db" || r.Name == "lab-subnet" || r.Name == "corp-dns" {
			t.Errorf("bob's resource list has %q", r.Name)
		}
	}
}

// postern status --json names the principal and, for the connector in use,
// its path and round-trip time.
func TestStatusReportsPrincipalAndPath(t *testing.T) {
	must(t, lab.NodeClient, 20*time.Second, nil, sshArgs(lab.DBName, "true")...)
	st := status(t, lab.NodeClient)
	if st.State != localapi.StateConnected {
		t.Errorf("state %q, want %q (%s)", st.State, localapi.StateConnected, st.Message)
	}
	if st.Principal == nil || st.Principal.Name != lab.Alice {
		t.Fatalf("principal %+v, want %s", st.Principal, lab.Alice)
	}
	if !st.ControllerReachable {
		t.Errorf("controller_reachable is false")
	}
	var used *localapi.ConnectorStatus
	for i, c := range st.Connectors {
		if c.Connected {
			used = &st.Connectors[i]
		}
	}
	if used == nil {
		t.Fatalf("no connected connector in %+v", st.Connectors)
	}
	if used.Path != "direct" && used.Path != "relay" {
		t.Errorf("connector %s path %q, want direct or relay", used.Name, used.Path)
	}
	if used.RTTMillis <= 0 {
		t.Errorf("connector %s rtt_ms %v, want > 0", used.Name, used.RTTMillis)
	}
	if used.TokenExpiry.IsZero() || !used.TokenExpiry.After(time.Now()) {
		t.Errorf("connector %s token_expiry %v, want a time in the future", used.Name, used.TokenExpiry)
	}
	text := must(t, lab.NodeClient, 10*time.Second, nil, getLab(t).Bin("postern"), "--socket", getLab(t).Socket(lab.NodeClient), "status")
	if !strings.Contains(text, lab.Alice) {
		t.Errorf("postern status does not name %s:\n%s", lab.Alice, text)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Both NATs are port-preserving cones: the client ends on a direct path to
// the connector (hole punching when the corporate NAT admits nothing).
func TestDirectPathThroughNATs(t *testing.T) {
	l := getLab(t)
	must(t, lab.NodeClient, 20*time.Second, nil, sshArgs(lab.DBName, "true")...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.WaitStatus(ctx, lab.NodeClient, 20*time.Second, "a direct path to a connector", func(st localapi.Status) bool {
		for _, c := range st.Connectors {
			if c.Connected && c.Path == "direct" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
}
