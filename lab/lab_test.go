//go:build linux

package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// buildLabBinary builds postern-lab into a temp dir (the lab runs it for
// its DNS and HTTP servers).
func buildLabBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir, "postern.dev/postern/cmd/postern-lab")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build postern-lab: %v\n%s", err, out)
	}
	return dir
}

func startTopology(t *testing.T, reachable bool) *Lab {
	t.Helper()
	testenv.RequireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Start(ctx, Options{BinDir: buildLabBinary(t), ReachableConnectors: reachable, Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(t.Failed()); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func mustExec(t *testing.T, l *Lab, node string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, node, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

func curl(l *Lab, node, url string, extra ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return l.Output(ctx, node, append(append([]string{"curl", "-sS", "--max-time", "3"}, extra...), url)...)
}

func TestTopologyServicesFaultsAndCleanup(t *testing.T) {
	l := startTopology(t, false)
	ctx := context.Background()

	t.Run("public DNS knows public names only", func(t *testing.T) {
		if got := strings.TrimSpace(mustExec(t, l, NodeClient, "dig", "+short", "+time=2", PublicName)); got != PublicWebIP {
			t.Fatalf("dig %s from the client = %q, want %s", PublicName, got, PublicWebIP)
		}
		out := mustExec(t, l, NodeClient, "dig", "+time=2", DBName)
		if !strings.Contains(out, "status: REFUSED") {
			t.Fatalf("public DNS answered a corporate name:\n%s", out)
		}
	})
	t.Run("corporate DNS knows corporate names", func(t *testing.T) {
		for name, want := range map[string]string{DBName: DBIP, WebName: WebIP, SubnetAppName: SubnetHostIP} {
			if got := strings.TrimSpace(mustExec(t, l, NodeConnectorA, "dig", "+short", "+time=2", name)); got != want {
				t.Errorf("dig %s from a connector = %q, want %s", name, got, want)
			}
		}
	})
	t.Run("home NAT masquerades", func(t *testing.T) {
		out, err := curl(l, NodeClient, "http://"+PublicName+"/")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "from "+HomeWANIP+":") {
			t.Fatalf("www saw the client not as %s:\n%s", HomeWANIP, out)
		}
	})
	t.Run("corporate NAT admits nothing inbound", func(t *testing.T) {
		if out, err := curl(l, NodeClient, "http://"+WebIP+"/"); err == nil {
			t.Fatalf("client reached the private web server directly:\n%s", out)
		}
		if out, err := curl(l, NodeController, "http://"+CorpWANIP+"/"); err == nil {
			t.Fatalf("internet reached the corporate router:\n%s", out)
		}
	})
	t.Run("corporate hosts reach out and each other", func(t *testing.T) {
		out, err := curl(l, NodeConnectorA, "http://"+PublicName+"/")
		if err != nil || !strings.Contains(out, "from "+CorpWANIP+":") {
			t.Fatalf("connector to www: %v\n%s", err, out)
		}
		if out, err := curl(l, NodeConnectorA, "http://"+WebName+"/"); err != nil || !strings.Contains(out, WebName) {
			t.Fatalf("connector to %s: %v\n%s", WebName, err, out)
		}
		if out, err := curl(l, NodeConnectorB, "http://"+SubnetHostIP+"/"); err != nil || !strings.Contains(out, SubnetAppName) {
			t.Fatalf("connector to the subnet: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(mustExec(t, l, NodeConnectorA, "cat", "/proc/sys/net/ipv4/ping_group_range")); got != "0\t2147483647" {
			t.Errorf("ping_group_range in the connector namespace = %q", got)
		}
	})
	t.Run("real sshd and PostgreSQL", func(t *testing.T) {
		if got := strings.TrimSpace(mustExec(t, l, NodeConnectorA, "ssh", DBName, "hostname")); got != "db" {
			t.Fatalf("ssh db hostname = %q", got)
		}
		cmd, _ := l.Command(ctx, NodeConnectorA, "psql", "-h", DBName, "-U", PGUser, "-d", PGDatabase, "-tAc", "select count(*) from servers")
		cmd.Env = append(cmd.Env, "PGPASSWORD="+l.PGPassword)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "3" {
			t.Fatalf("psql: %v: %s", err, out)
		}
	})
	t.Run("block all and drop percent at a router", func(t *testing.T) {
		if err := l.BlockAll(ctx, RouterCorp, true); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeConnectorA, "http://"+PublicName+"/"); err == nil {
			t.Fatal("traffic passed a blocked router")
		}
		if err := l.BlockAll(ctx, RouterCorp, false); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeConnectorA, "http://"+PublicName+"/"); err != nil {
			t.Fatalf("after unblocking: %v", err)
		}
		if err := l.DropPercent(ctx, RouterHome, 100); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeClient, "http://"+PublicName+"/"); err == nil {
			t.Fatal("traffic passed a router dropping 100%")
		}
		if err := l.DropPercent(ctx, RouterHome, 101); err == nil {
			t.Fatal("DropPercent(101) accepted")
		}
		if err := l.DropPercent(ctx, RouterHome, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeClient, "http://"+PublicName+"/"); err != nil {
			t.Fatalf("after dropping 0%%: %v", err)
		}
	})
	t.Run("block UDP keeps DNS and TCP", func(t *testing.T) {
		if _, err := l.Spawn("dns-5353", NodePublicDNS, nil, l.Bin("postern-lab"), "dns-server", "--listen", PublicDNSIP+":5353", "--zone", "example.com", "--record", PublicName+"="+PublicWebIP); err != nil {
			t.Fatal(err)
		}
		if err := l.waitListening(ctx, NodePublicDNS, "udp", "5353", 10*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		dig5353 := []string{"dig", "+short", "+time=1", "+tries=1", "-p", "5353", "@" + PublicDNSIP, PublicName}
		if got := strings.TrimSpace(mustExec(t, l, NodeClient, dig5353...)); got != PublicWebIP {
			t.Fatalf("dig on 5353 = %q", got)
		}
		if err := l.BlockUDP(ctx, RouterHome, true); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(ctx, NodeClient, dig5353...); err == nil && strings.TrimSpace(out) == PublicWebIP {
			t.Fatal("UDP on 5353 passed a router blocking UDP")
		}
		if got := strings.TrimSpace(mustExec(t, l, NodeClient, "dig", "+short", "+time=2", PublicName)); got != PublicWebIP {
			t.Fatalf("DNS blocked along with UDP: %q", got)
		}
		if _, err := curl(l, NodeClient, "http://"+PublicName+"/"); err != nil {
			t.Fatalf("TCP blocked along with UDP: %v", err)
		}
		if err := l.BlockUDP(ctx, RouterHome, false); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(mustExec(t, l, NodeClient, dig5353...)); got != PublicWebIP {
			t.Fatalf("after unblocking UDP: %q", got)
		}
	})
	t.Run("symmetric NAT randomizes ports", func(t *testing.T) {
		port := func(local string) string {
			out, err := curl(l, NodeClient, "http://"+PublicName+"/", "--local-port", local)
			if err != nil {
				t.Fatal(err)
			}
			i := strings.LastIndex(out, HomeWANIP+":")
			if i < 0 {
				t.Fatalf("no address in %q", out)
			}
			return strings.TrimRight(out[i+len(HomeWANIP)+1:], ".\n")
		}
		if p := port("40123"); p != "40123" {
			t.Fatalf("port-preserving NAT mapped 40123 to %s", p)
		}
		if err := l.SymmetricNAT(ctx, RouterHome, true); err != nil {
			t.Fatal(err)
		}
		if p := port("40124"); p == "40124" {
			t.Fatalf("symmetric NAT kept port 40124")
		}
		if err := l.SymmetricNAT(ctx, RouterHome, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("change client address", func(t *testing.T) {
		newIP, err := l.ChangeClientAddress(ctx, NodeClient)
		if err != nil {
			t.Fatal(err)
		}
		if newIP.String() == HomeWANIP {
			t.Fatal("public address unchanged")
		}
		out, err := curl(l, NodeClient, "http://"+PublicName+"/")
		if err != nil || !strings.Contains(out, "from "+newIP.String()+":") {
			t.Fatalf("after roaming: %v\n%s", err, out)
		}
		if _, err := l.ChangeClientAddress(ctx, NodeDB); err == nil {
			t.Fatal("roamed a server")
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		fetch := func() time.Duration {
			start := time.Now()
			if _, err := curl(l, NodeClient, "http://"+PublicWebIP+"/blob?size=1048576&seed=1", "--max-time", "20", "-o", "/dev/null"); err != nil {
				t.Fatal(err)
			}
			return time.Since(start)
		}
		if err := l.RateLimit(ctx, RouterHome, 2000); err != nil {
			t.Fatal(err)
		}
		// 1 MiB at 2 Mbit/s takes about 4 s.
		if d := fetch(); d < 2*time.Second {
			t.Errorf("1 MiB through a 2 Mbit/s link took only %s", d)
		}
		if err := l.RateLimit(ctx, RouterHome, 0); err != nil {
			t.Fatal(err)
		}
		if err := l.RateLimit(ctx, RouterHome, 0); err != nil {
			t.Fatalf("removing an absent limit: %v", err)
		}
		if d := fetch(); d > 2*time.Second {
			t.Errorf("1 MiB without a limit took %s", d)
		}
	})
	t.Run("stop and restart a program", func(t *testing.T) {
		if err := l.Stop(ProgWeb); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeConnectorA, "http://"+WebName+"/"); err == nil {
			t.Fatal("web answered while stopped")
		}
		if err := l.Restart(ctx, ProgWeb); err != nil {
			t.Fatal(err)
		}
		if err := l.waitListening(ctx, NodeWeb, "tcp", "80", 10*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := curl(l, NodeConnectorA, "http://"+WebName+"/"); err != nil {
			t.Fatalf("after restart: %v", err)
		}
		if err := l.Stop("no-such-program"); err == nil {
			t.Fatal("stopped an unknown program")
		}
		if err := l.BlockAll(ctx, "no-such-router", true); err == nil {
			t.Fatal("blocked an unknown router")
		}
	})
}

func TestReachableConnectorsVariant(t *testing.T) {
	l := startTopology(t, true)
	// UDP to a connector passes the corporate NAT; TCP to other hosts does not.
	if _, err := l.Spawn("dns-on-connector", NodeConnectorA, nil, l.Bin("postern-lab"), "dns-server", "--listen", ConnectorAIP+":4433", "--zone", "example.com", "--record", PublicName+"="+PublicWebIP); err != nil {
		t.Fatal(err)
	}
	if err := l.waitListening(context.Background(), NodeConnectorA, "udp", "4433", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustExec(t, l, NodeClient, "dig", "+short", "+time=2", "-p", "4433", "@"+ConnectorAIP, PublicName)); got != PublicWebIP {
		t.Fatalf("UDP to the connector: %q", got)
	}
	if out, err := curl(l, NodeClient, "http://"+WebIP+"/"); err == nil {
		t.Fatalf("client reached a private host directly:\n%s", out)
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	testenv.RequireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Start(ctx, Options{BinDir: buildLabBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, name := range l.Programs() {
		p, _ := l.Proc(name)
		pids = append(pids, p.PID())
	}
	// A stray process inside a namespace (not started through Spawn) is
	// ended too.
	stray, _ := l.Command(context.Background(), NodeWeb, "sleep", "600")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = stray.Wait() }()
	pids = append(pids, stray.Process.Pid)
	dir := l.Dir
	if err := l.Close(false); err != nil {
		t.Fatalf("close: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), l.ID) {
		t.Errorf("namespaces left:\n%s", out)
	}
	if m, _ := filepath.Glob("/etc/netns/" + l.ID + "-*"); len(m) > 0 {
		t.Errorf("/etc/netns entries left: %v", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work dir %s left: %v", dir, err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, pid := range pids {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Errorf("process %d still runs: %s", pid, b)
		}
	}
	if err := l.Close(false); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := l.Spawn("late", NodeWeb, nil, "true"); err == nil {
		t.Error("spawn after close succeeded")
	}
}

func TestCleanupStale(t *testing.T) {
	testenv.RequireNetns(t)
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	id := "plfeed01"
	ns := id + "-x"
	if _, err := run(ctx, nil, "ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNamespace(ctx, ns) })
	if err := os.MkdirAll("/etc/netns/"+ns, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		t.Fatal(err)
	}
	reg := filepath.Join(registryDir, id+".json")
	if err := os.WriteFile(reg, []byte(`{"id":"`+id+`","pid":`+strconv.Itoa(dead.Process.Pid)+`}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// A live lab (this process) is never touched.
	live := filepath.Join(registryDir, "plfeed02.json")
	if err := os.WriteFile(live, []byte(`{"id":"plfeed02","pid":`+strconv.Itoa(os.Getpid())+`}`), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(live)
	ids, err := CleanupStale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != id {
		t.Fatalf("cleaned %v, want [%s]", ids, id)
	}
	if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
		t.Errorf("namespace %s left", ns)
	}
	if _, err := os.Stat("/etc/netns/" + ns); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s left", ns)
	}
	if _, err := os.Stat(reg); !os.IsNotExist(err) {
		t.Errorf("registration left")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live lab's registration removed: %v", err)
	}
}
