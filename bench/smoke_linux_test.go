package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// TestMain lets the test binary act as the agent program, as
// `postern-bench agent ...` does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		if err := AgentMain(context.Background(), os.Args[2:], os.Stdout); err != nil {
			os.Stderr.WriteString("agent: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke builds the topology, starts the servers, runs one direct-TCP
// iperf3 cell and one request/response cell, and checks that everything is
// removed afterwards.
func TestSmoke(t *testing.T) {
	testenv.RequireNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Quick: true, Tunnels: []string{TunDirect}, AgentBin: exe, RepoDir: "..", Progress: testWriter{t}}
	opts.defaults()
	r := &runner{opts: opts, topo: newTopology(), cellErrs: map[string][]string{}, work: t.TempDir()}
	r.logDir = filepath.Join(r.work, "logs")
	if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	nss := func() []string {
		var out []string
		ents, _ := os.ReadDir("/run/netns")
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), r.topo.id) {
				out = append(out, e.Name())
			}
		}
		return out
	}
	closed := false
	defer func() {
		if !closed {
			_ = r.close()
		}
	}()
	if err := r.topo.build(ctx); err != nil {
		t.Fatalf("build topology: %v", err)
	}
	if got := len(nss()); got != 4 {
		t.Fatalf("%d namespaces, want 4", got)
	}
	if err := r.startServers(ctx); err != nil {
		t.Fatalf("start servers: %v", err)
	}
	tun := r.directTunnel()
	res, err := r.iperf(ctx, tun, 1)
	if err != nil {
		t.Fatalf("direct iperf3: %v", err)
	}
	if res.gbps() <= 0.05 {
		t.Fatalf("direct TCP throughput %.3f Gbit/s, implausibly low", res.gbps())
	}
	var rr RRResult
	if err := r.agentJSON(ctx, tun.ns, &rr, "rr", "--addr", tun.echoAddr(), "--duration", "200ms"); err != nil {
		t.Fatalf("request/response: %v", err)
	}
	if rr.Requests == 0 || rr.P99us <= 0 || rr.P50us > rr.P99us {
		t.Fatalf("implausible request/response result %+v", rr)
	}
	// UDP from cli2 to the server is dropped; TCP passes.
	if _, err := nsRun(ctx, r.topo.ns(NodeClient2), nil, "nft", "list", "table", "inet", "pbench"); err != nil {
		t.Fatalf("cli2 UDP block missing: %v", err)
	}
	t.Logf("direct: %.2f Gbit/s, rr p50 %.1f µs p99 %.1f µs", res.gbps(), rr.P50us, rr.P99us)
	closed = true
	if err := r.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left := nss(); len(left) != 0 {
		t.Fatalf("namespaces left behind: %v", left)
	}
	for _, n := range []string{NodeClient, NodeServer} {
		if _, err := os.Stat(filepath.Join("/etc/netns", r.topo.id+"-"+n)); err == nil {
			t.Fatalf("/etc/netns entry of %s left behind", n)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
