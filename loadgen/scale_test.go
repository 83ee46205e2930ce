package loadgen

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"postern.dev/postern/controller"
	"postern.dev/postern/controller/store/pgtest"
	"postern.dev/postern/internal/testenv"
)

// TestScaleSmoke: a small run (50 devices, 5 connectors) against a real
// controller process on SQLite finishes with every measurement filled and no
// error, so `make bench-scale` cannot rot unnoticed. Part of `make test`.
func TestScaleSmoke(t *testing.T) {
	bin := controllerBin(t)
	c := startControllers(t, bin, "", 1)
	rep, err := Run(context.Background(), Config{URL: c.url, Roots: c.roots, AdminToken: c.admin,
		Devices: 50, Connectors: 5, PerAccount: 10, Concurrency: 16, TokenPhase: time.Second, PIDs: c.pids})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SignIns.N != 50 || rep.Tokens.N == 0 || rep.ToDevices.N != 50 || rep.ToConnectors.N != 5 || rep.CallErrors+rep.StreamErrors != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if runtime.GOOS == "linux" && (rep.Controllers[0].RSS == 0 || rep.Baseline[0].RSS == 0) {
		t.Fatalf("no controller memory: %+v", rep.Controllers)
	}
	t.Logf("%d devices: sign-ins %.0f/s, tokens %.0f/s, policy change to last device %v",
		rep.Devices, rep.SignIns.PerSecond(), rep.Tokens.PerSecond(), rep.ToDevices.Max.Round(time.Millisecond))
}

// TestScale is `make bench-scale`: for each N of POSTERN_SCALE_DEVICES
// (default 1000,3000,10000) devices and N/10 connectors, a run against two
// replicas on one PostgreSQL and one against a single controller on
// SQLite, each on fresh controllers; the table goes to docs/scale.md.
func TestScale(t *testing.T) {
	if os.Getenv("POSTERN_SCALE") != "1" {
		t.Skip("the scale benchmark runs with POSTERN_SCALE=1 (make bench-scale)")
	}
	raiseFileLimit(t)
	bin := controllerBin(t)
	ns := []int{1000, 3000, 10000}
	if v := os.Getenv("POSTERN_SCALE_DEVICES"); v != "" {
		ns = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("POSTERN_SCALE_DEVICES=%q: want numbers like 1000,3000", v)
			}
			ns = append(ns, n)
		}
	}
	var pg *pgtest.Server
	type row struct {
		backend string
		rep     *Report
		load    [2]float64
	}
	var rows []row
	for _, n := range ns {
		for _, backend := range []string{"postgres x2", "sqlite x1"} {
			db, replicas := "", 1
			if strings.HasPrefix(backend, "postgres") {
				if pg == nil {
					pg = pgtest.Start(t)
				}
				db, replicas = pg.NewDatabase(t), 2
			}
			c := startControllers(t, bin, db, replicas)
			l0 := loadAvg()
			profiles := func() []string { return nil }
			cfg := Config{URL: c.url, Roots: c.roots, AdminToken: c.admin, Devices: n, Connectors: max(1, n/10), PIDs: c.pids}
			if db != "" {
				cfg.DBStats = pgStats(db)
			}
			if n == ns[len(ns)-1] {
				// The largest run: where the memory sits with every part
				// connected, and where the CPU goes while tokens are issued.
				cfg.OnConnected = func() {
					profiles = profileControllers(t, c.metrics[0], strings.Fields(backend)[0], cfg.TokenPhase)
				}
				cfg.TokenPhase = 10 * time.Second
			}
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("%s, %d devices: %v", backend, n, err)
			}
			rows = append(rows, row{backend, rep, [2]float64{l0, loadAvg()}})
			for _, p := range profiles() {
				t.Logf("%s", p)
			}
			t.Logf("%s, %d devices, %d connectors: sign-ins %.0f/s (%v), tokens %.0f/s (%v), policy change to devices %v, to connectors %v, %d KiB per device, errors %d/%d %q",
				backend, n, rep.Connectors, rep.SignIns.PerSecond(), rep.SignInLatency, rep.Tokens.PerSecond(), rep.TokenLatency,
				rep.ToDevices, rep.ToConnectors, rep.MemoryPerDevice()>>10, rep.CallErrors, rep.StreamErrors, rep.FirstErrors)
			c.stop()
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| devices | connectors | backend | sign-ins/s | tokens/s (p99) | heartbeats/s | policy → last device (p50/p99/max) | policy → last connector (p99/max) | controller CPU in token phase | KiB per device | PostgreSQL connections; tx/s in sign-ins / tokens | errors (call/stream) | load avg before → after |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		p := r.rep
		pgs := "–"
		if p.DBConns > 0 {
			pgs = fmt.Sprintf("%d; %.0f / %.0f", p.DBConns, p.DBTxPerSecSignIn, p.DBTxPerSecTokens)
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %.0f | %.0f (%v) | %.0f | %v / %v / %v | %v / %v | %v | %d | %s | %d / %d | %.2f → %.2f |\n",
			p.Devices, p.Connectors, r.backend, p.SignIns.PerSecond(), p.Tokens.PerSecond(), p.TokenLatency.P99.Round(time.Millisecond),
			p.Heartbeats.PerSecond(), p.ToDevices.P50.Round(time.Millisecond), p.ToDevices.P99.Round(time.Millisecond), p.ToDevices.Max.Round(time.Millisecond),
			p.ToConnectors.P99.Round(time.Millisecond), p.ToConnectors.Max.Round(time.Millisecond), p.CPU().Round(10*time.Millisecond),
			p.MemoryPerDevice()>>10, pgs, p.CallErrors, p.StreamErrors, r.load[0], r.load[1])
	}
	out := os.Getenv("POSTERN_SCALE_OUT")
	if out == "" {
		out = filepath.Join("..", "docs", "scale-results.md")
	}
	hdr := fmt.Sprintf("<!-- written by make bench-scale (loadgen/scale_test.go) on %s, %d CPUs -->\n\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU())
	if err := os.WriteFile(out, []byte(hdr+b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
}

// controllers is a running controller set.
type controllers struct {
	url     string   // comma-separated replica URLs
	metrics []string // each replica's --metrics address
	roots   *x509.CertPool
	admin   string
	pids    []int
	stop    func()
}

func controllerBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("POSTERN_BIN")
	if dir == "" {
		dir, _ = filepath.Abs(filepath.Join("..", "bin"))
	}
	bin := filepath.Join(dir, "postern-controller")
	if _, err := os.Stat(bin); err != nil {
		if testenv.InCI() {
			t.Fatalf("%s: %v (make build first)", bin, err)
		}
		t.Skipf("%s: %v (make build first)", bin, err)
	}
	return bin
}

// startControllers starts replicas controller processes (on db, a
// PostgreSQL URL, or SQLite when empty) and waits until they answer.
func startControllers(t *testing.T, bin, db string, replicas int) *controllers {
	t.Helper()
	base := t.TempDir()
	c := &controllers{}
	var urls []string
	var procs []*exec.Cmd
	for i := 0; i < replicas; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		dir := filepath.Join(base, fmt.Sprintf("r%d", i))
		if i > 0 {
			copyDeployment(t, filepath.Join(base, "r0"), dir)
		}
		public := "https://" + addr
		if i > 0 {
			public = urls[0]
		}
		mln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		maddr := mln.Addr().String()
		mln.Close()
		c.metrics = append(c.metrics, maddr)
		args := []string{"serve", "--data", dir, "--listen", addr, "--public-url", public, "--advertise-url", "https://" + addr, "--metrics", maddr,
			"--rate-limit", "1000000", "--rate-burst", "1000000", "--log-level", "warn"}
		if db != "" {
			args = append(args, "--database", db)
		}
		cmd := exec.Command(bin, args...)
		logf, err := os.Create(filepath.Join(base, fmt.Sprintf("r%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		c.pids = append(c.pids, cmd.Process.Pid)
		urls = append(urls, "https://"+addr)
		waitFile(t, filepath.Join(dir, "admin-token"), cmd)
		waitListening(t, addr, cmd)
	}
	c.stop = func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = p.Process.Kill()
				<-done
			}
		}
	}
	t.Cleanup(c.stop)
	ca, err := os.ReadFile(filepath.Join(base, "r0", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(ca)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c.roots = x509.NewCertPool()
	c.roots.AddCert(cert)
	tok, err := os.ReadFile(filepath.Join(base, "r0", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	c.admin = strings.TrimSpace(string(tok))
	c.url = strings.Join(urls, ",")
	return c
}

func copyDeployment(t *testing.T, from, to string) {
	t.Helper()
	if err := controller.CopyDeployment(from, to); err != nil {
		t.Fatal(err)
	}
}

func waitFile(t *testing.T, path string, cmd *exec.Cmd) {
	t.Helper()
	testenv.Poll(t, 30*time.Second, path, func() error {
		_, err := os.Stat(path)
		return err
	})
}

func waitListening(t *testing.T, addr string, cmd *exec.Cmd) {
	t.Helper()
	testenv.Poll(t, 30*time.Second, "controller listening on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// profileControllers takes a heap profile of the replica serving metrics at
// addr now and a CPU profile over the next d (in the background, while the
// token phase runs); the function it returns gives their `go tool pprof
// -top` summaries once the CPU profile is done.
func profileControllers(t *testing.T, addr, name string, d time.Duration) func() []string {
	dir := os.Getenv("POSTERN_SCALE_PROFILES")
	if dir == "" {
		dir = t.TempDir()
	}
	fetch := func(path, file string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return fmt.Sprintf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		f := filepath.Join(dir, file)
		out, err := os.Create(f)
		if err != nil {
			return err.Error()
		}
		_, err = io.Copy(out, resp.Body)
		out.Close()
		if err != nil {
			return err.Error()
		}
		top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", f).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("pprof %s: %v\n%s", f, err, top)
		}
		return fmt.Sprintf("%s (%s):\n%s", file, f, top)
	}
	heap := fetch("/debug/pprof/heap?gc=1", name+"-heap.pb.gz")
	cpu := make(chan string, 1)
	go func() {
		cpu <- fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), name+"-cpu.pb.gz")
	}()
	return func() []string { return []string{heap, <-cpu} }
}

// pgStats reads the connections to, and transactions committed in, the
// database at dbURL (the replicas' store) from the server's statistics.
func pgStats(dbURL string) func(context.Context) (int, int64, error) {
	return func(ctx context.Context) (int, int64, error) {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return 0, 0, err
		}
		defer conn.Close(context.Background())
		var conns int
		var xacts int64
		err = conn.QueryRow(ctx, `SELECT numbackends - 1, xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&conns, &xacts)
		return conns, xacts, err
	}
}
