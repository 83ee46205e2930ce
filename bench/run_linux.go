package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"postern.dev/postern/lab"
)

// runner is one benchmark run.
type runner struct {
	opts     Options
	topo     *topology
	work     string
	logDir   string
	procs    []*proc
	cleanups []func()
	pst      *postern
	tunnels  []*tunnel
	rep      *Report
	echo     *proc // the echo server
	echoBase int   // its descriptors when idle
	symErr   error // why the symbol copies for the profile could not be made
	cellErrs map[string][]string
}

// Run performs a whole benchmark run and returns its report (also written
// to ResultsDir and DocPath).
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	opts.defaults()
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	for _, tool := range []string{"ip", "ss", "nft", "tc", "iperf3", "dig", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s (run scripts/install-deps.sh)", ErrMissingTool, tool)
		}
	}
	if opts.BinDir == "" {
		opts.BinDir = filepath.Join(opts.RepoDir, "bin")
	}
	for _, p := range []*string{&opts.RepoDir, &opts.BinDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", *p, err)
		}
	}
	if opts.AgentBin == "" {
		if opts.AgentBin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find own executable for the agents: %w", err)
		}
	}
	raiseFDLimit()
	r := &runner{opts: opts, topo: newTopology(), cellErrs: map[string][]string{}}
	if r.work, err = os.MkdirTemp("", "postern-bench-"+r.topo.id+"-"); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	r.logDir = filepath.Join(r.work, "logs")
	if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	start := time.Now()
	r.rep = &Report{Started: start.UTC(), Mode: "full", Repeats: opts.Repeats, CellSeconds: opts.Cell.Seconds(), ShortCellSeconds: opts.ShortCell.Seconds(), ProbeSeconds: opts.Probe.Seconds(),
		FixedRate: opts.FixedRate, RateLimit: opts.RateLimit, ShortConns: max(opts.ShortConns, 0), Machine: describeMachine(ctx), Commit: gitCommit(ctx, opts.RepoDir)}
	if opts.Quick {
		r.rep.Mode = "quick"
	}
	defer func() {
		cerr := r.close()
		if err == nil && cerr != nil {
			r.progress("cleanup: %v", cerr)
		}
		if err != nil || opts.KeepWork {
			r.progress("work dir with logs kept: %s", r.work)
		} else {
			_ = os.RemoveAll(r.work)
		}
	}()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	r.measure(ctx)
	if opts.Profile {
		r.profile(ctx)
	}
	r.finish()
	r.close()
	if opts.GoBench {
		r.progress("Go benchmarks (-benchtime %s)", opts.GoBenchTime)
		r.rep.GoBench, r.rep.GoBenchError = RunGoBenchmarks(ctx, opts.RepoDir, opts.GoBenchTime, opts.Progress)
	}
	r.rep.Finished = time.Now().UTC()
	r.rep.Machine.LoadAvg = append(r.rep.Machine.LoadAvg, loadAvg())
	r.rep.DurationSec = time.Since(start).Seconds()
	r.rep.Evaluate()
	if b, err := os.ReadFile(filepath.Join(opts.RepoDir, "bench", "analysis.md")); err == nil {
		r.rep.Analysis = string(b)
	}
	if err := r.rep.Write(opts.ResultsDir, opts.DocPath); err != nil {
		return r.rep, err
	}
	r.progress("done in %.0f s", r.rep.DurationSec)
	return r.rep, nil
}

func raiseFDLimit() {
	var l syscall.Rlimit
	// Always call Setrlimit: Go raises its own soft limit at start but
	// gives children the original one unless the program sets it itself.
	// The servers and tunnels hold 10,000+ sockets each.
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if l.Max > want.Max {
		want = syscall.Rlimit{Cur: l.Max, Max: l.Max}
	}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.opts.Progress, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (r *runner) spawn(name, ns string, env []string, args ...string) (*proc, error) {
	p, err := spawn(r.logDir, name, ns, env, args...)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	return p, nil
}

func (r *runner) agentArgs(name string, args ...string) []string {
	return append([]string{r.opts.AgentBin, "agent", name}, args...)
}

// agentJSON runs an agent in ns and decodes its JSON line into v.
func (r *runner) agentJSON(ctx context.Context, ns string, v any, name string, args ...string) error {
	out, err := nsRun(ctx, ns, nil, r.agentArgs(name, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(lab.LastLine(out)), v); err != nil {
		return fmt.Errorf("agent %s: %w: %q", name, err, out)
	}
	return nil
}

func (r *runner) wants(key string) bool {
	for _, k := range r.opts.Tunnels {
		if k == key {
			return true
		}
	}
	return false
}

// setup builds the topology, starts the servers and brings up every tunnel.
func (r *runner) setup(ctx context.Context) error {
	if r.wants(TunPosternDirect) || r.wants(TunPosternRelay) {
		// Run the Postern programs from a copy taken now: other people may
		// rebuild bin/ while the benchmark runs.
		if err := r.snapshotBin(); err != nil {
			return err
		}
	}
	if r.opts.Profile && (r.wants(TunPosternDirect) || r.wants(TunPosternRelay)) {
		// Right away, while the tree still matches what make build put in
		// bin/ (other people may be editing it).
		r.progress("building posternd and postern-connector with symbols for the profile")
		r.symErr = r.buildSymbols(ctx, filepath.Join(r.work, "symfs"))
		if r.symErr != nil {
			r.progress("no profile: %v", r.symErr)
		}
	}
	r.progress("topology %s: namespaces, veths (198.18.0.0/15), nftables", r.topo.id)
	if err := r.topo.build(ctx); err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	if err := r.startServers(ctx); err != nil {
		return fmt.Errorf("start servers: %w", err)
	}
	for _, key := range AllTunnels {
		if !r.wants(key) {
			continue
		}
		t0 := time.Now()
		var t *tunnel
		switch key {
		case TunDirect:
			t = r.directTunnel()
		case TunWireGuard:
			t = r.wireguardTunnel(ctx)
		case TunOpenVPN:
			t = r.openvpnTunnel(ctx)
		case TunSSH:
			t = r.sshTunnel(ctx)
		case TunPosternDirect, TunPosternRelay:
			if r.pst == nil {
				r.progress("deploying Postern (controller, relay, connector)")
				if err := r.deployPostern(ctx); err != nil {
					r.pst = &postern{}
					r.progress("Postern deployment failed: %v", err)
					r.rep.Notes = append(r.rep.Notes, "Postern deployment failed: "+err.Error())
				}
			}
			if key == TunPosternDirect {
				t = r.posternTunnel(ctx, key, NodeClient, "direct")
			} else {
				t = r.posternTunnel(ctx, key, NodeClient2, "relay")
			}
		}
		if t.err != nil {
			r.progress("%-15s UNAVAILABLE: %v", key, t.err)
		} else {
			r.progress("%-15s up in %.1f s (%s)", key, time.Since(t0).Seconds(), t.detail)
		}
		r.tunnels = append(r.tunnels, t)
	}
	return nil
}

// close stops every process and removes the topology.
func (r *runner) close() error {
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i]
		grace := time.Second
		if strings.HasPrefix(p.Name, "posternd") {
			grace = 3 * time.Second // restores resolv.conf and routes
		}
		p.stop(grace)
	}
	r.procs = nil
	for _, c := range r.cleanups {
		c()
	}
	r.cleanups = nil
	return r.topo.close()
}

type cell struct {
	name string
	run  func(ctx context.Context, t *tunnel) (map[string]float64, error)
	// only restricts the cell to some tunnels.
	only func(t *tunnel) bool
	// around runs before/after the cell for all tunnels (tbf on/off).
	before, after func(ctx context.Context) error
}

func (r *runner) cells() []cell {
	sec := r.opts.Cell.Seconds()
	short := r.opts.ShortCell.Seconds()
	c := []cell{
		{name: "1 flow up", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			res, err := r.iperf(ctx, t, sec)
			return map[string]float64{MTputUp1: res.gbps()}, err
		}},
		{name: "1 flow down", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			res, err := r.iperf(ctx, t, sec, "-R")
			return map[string]float64{MTputDown1: res.gbps()}, err
		}},
		{name: "4 flows", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			res, err := r.iperf(ctx, t, short, "-P", "4")
			return map[string]float64{MTputUp4: res.gbps()}, err
		}},
		{name: "64 flows", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			res, err := r.iperf(ctx, t, short, "-P", "64")
			return map[string]float64{MTputUp64: res.gbps(), MFairness64: res.jain()}, err
		}},
		{name: "1 flow under " + r.opts.RateLimit + " tbf", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			res, err := r.iperf(ctx, t, short)
			return map[string]float64{MTbf: res.gbps()}, err
		}, before: func(ctx context.Context) error { return r.topo.setRateLimit(ctx, r.opts.RateLimit) },
			after: func(ctx context.Context) error { return r.topo.setRateLimit(ctx, "") }},
		{name: "CPU per GB at " + r.opts.FixedRate, only: func(t *tunnel) bool { return len(t.procs) > 0 }, run: r.cpuCell},
		{name: "64-byte request/response idle", run: func(ctx context.Context, t *tunnel) (map[string]float64, error) {
			var res RRResult
			err := r.agentJSON(ctx, t.ns, &res, "rr", "--addr", t.echoAddr(), "--duration", r.opts.Probe.String())
			return map[string]float64{MRRIdleP50: res.P50us, MRRIdleP99: res.P99us}, err
		}},
		{name: "64-byte request/response under bulk", run: r.rrBulkCell},
		{name: "64-byte request/response beside bulk outside the tunnel", only: func(t *tunnel) bool { return t.key == TunPosternDirect || t.key == TunPosternRelay },
			run: r.rrBulkOutsideCell},
		{name: "connection setup", run: r.setupCell},
		{name: "DNS queries/s", only: func(t *tunnel) bool { return t.key == TunPosternDirect || t.key == TunDirect }, run: r.dnsCell},
	}
	return c
}

func (r *runner) cellErr(t *tunnel, msg string) {
	if len(r.cellErrs[t.key]) < 8 {
		r.cellErrs[t.key] = append(r.cellErrs[t.key], msg)
	}
}

// measure runs every cell Repeats times, interleaved: for each repeat, for
// each cell, every tunnel in turn (the order rotates with the repeat).
func (r *runner) measure(ctx context.Context) {
	vals := map[string]map[string][]float64{}
	for _, t := range r.tunnels {
		vals[t.key] = map[string][]float64{}
	}
	var live []*tunnel
	for _, t := range r.tunnels {
		if t.err == nil {
			live = append(live, t)
		}
	}
	// Memory per idle flow: once per run, first, while the tunnel
	// processes are as a fresh start leaves them. Measured after the timed
	// cells (as until 2026-12-06), the RSS growth depended on how much
	// freed memory those cells had left in the processes: 9.3 KiB per flow
	// in the full run of 17:15 UTC, about 34 with fresh processes of the
	// same build. For the same reason every count's growth is taken from
	// the RSS the processes had before the first memory cell: measured
	// from the RSS after the 1,000-flow cell instead, the 10,000-flow cell
	// reused what the first had left and read 27.7-28.0 KiB per flow,
	// against 31.5-36.7 with fresh processes (2026-12-07, 21:34 UTC).
	base := map[*tunnel]int64{}
	for _, t := range live {
		if pids := t.memPids(); len(pids) > 0 {
			base[t] = totalRSS(pids)
		}
	}
	for _, n := range r.opts.IdleFlows {
		if !r.opts.wantCell("idle flows") {
			break
		}
		for _, t := range live {
			if t.key == TunDirect || t.alive() != nil || ctx.Err() != nil {
				continue
			}
			kib, err := r.memCell(ctx, t, n, base[t])
			key := fmt.Sprintf("%s%d", MMemPerFlow, n)
			if err != nil {
				r.cellErr(t, fmt.Sprintf("%d idle flows: %v", n, err))
				r.progress("mem %6d idle flows %-15s FAILED: %v", n, t.key, err)
				continue
			}
			vals[t.key][key] = append(vals[t.key][key], kib)
			r.progress("mem %6d idle flows %-15s %.2f KiB/flow", n, t.key, kib)
		}
	}
	for rep := 0; rep < r.opts.Repeats && ctx.Err() == nil; rep++ {
		order := make([]*tunnel, len(live))
		for i := range live {
			order[i] = live[(i+rep)%len(live)]
		}
		for _, c := range r.cells() {
			if !r.opts.wantCell(c.name) {
				continue
			}
			if c.before != nil {
				if err := c.before(ctx); err != nil {
					r.progress("%s: setup failed: %v", c.name, err)
					continue
				}
			}
			for _, t := range order {
				if ctx.Err() != nil {
					break
				}
				if c.only != nil && !c.only(t) {
					continue
				}
				if err := t.alive(); err != nil {
					if t.err == nil {
						t.err = fmt.Errorf("%w: %v", ErrTunnelDown, err)
						r.progress("%s went down: %v", t.key, err)
					}
					continue
				}
				m, err := c.run(ctx, t)
				if err != nil {
					r.cellErr(t, fmt.Sprintf("repeat %d, %s: %v", rep+1, c.name, err))
					r.progress("r%d %-36s %-15s FAILED: %v", rep+1, c.name, t.key, err)
					// One retry would skew the interleaving; record nothing.
					continue
				}
				var parts []string
				for k, v := range m {
					vals[t.key][k] = append(vals[t.key][k], v)
					parts = append(parts, fmt.Sprintf("%s=%.4g", k, v))
				}
				r.progress("r%d %-36s %-15s %s", rep+1, c.name, t.key, strings.Join(sortedStrings(parts), " "))
			}
			if c.after != nil {
				if err := c.after(ctx); err != nil {
					r.progress("%s: teardown failed: %v", c.name, err)
				}
			}
		}
	}
	// No stall: short connections in a row, once per run, direct path.
	for _, t := range live {
		if t.key == TunPosternDirect && r.opts.ShortConns > 0 && r.opts.wantCell("short connections") && ctx.Err() == nil {
			r.shortConnsPhase(ctx, t, vals[t.key])
		}
	}
	for _, t := range r.tunnels {
		tr := TunnelResult{Key: t.key, Label: t.label, Detail: t.detail, Metrics: map[string]Summary{}, CellErrors: r.cellErrs[t.key]}
		if t.err != nil {
			tr.Error = t.err.Error()
		}
		for k, v := range vals[t.key] {
			tr.Metrics[k] = Summarize(v)
		}
		r.rep.Tunnels = append(r.rep.Tunnels, tr)
	}
}

// finish derives the ratios that need the direct reference.
func (r *runner) finish() {
	var ref float64 = math.NaN()
	for _, t := range r.rep.Tunnels {
		if t.Key == TunDirect {
			if s, ok := t.Metrics[MTbf]; ok && s.Valid() {
				ref = s.Median
			}
		}
	}
	for i := range r.rep.Tunnels {
		t := &r.rep.Tunnels[i]
		if s, ok := t.Metrics[MTbf]; ok && s.Valid() && !math.IsNaN(ref) && ref > 0 {
			v := make([]float64, len(s.Values))
			for j, x := range s.Values {
				v[j] = x / ref
			}
			t.Metrics[MTbfFraction] = Summarize(v)
		}
	}
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// errIperf marks an iperf3 failure.
var errIperf = errors.New("iperf3")

// snapshotBin copies the Postern programs into the work directory and
// points BinDir there.
func (r *runner) snapshotBin() error {
	dst := filepath.Join(r.work, "bin")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("snapshot bin: %w", err)
	}
	for _, p := range []string{"postern-controller", "postern-relay", "postern-connector", "posternd", "postern"} {
		b, err := os.ReadFile(filepath.Join(r.opts.BinDir, p))
		if err != nil {
			return fmt.Errorf("%w: %s (run make build)", ErrMissingTool, filepath.Join(r.opts.BinDir, p))
		}
		if err := os.WriteFile(filepath.Join(dst, p), b, 0o755); err != nil {
			return fmt.Errorf("snapshot bin: %w", err)
		}
	}
	r.opts.BinDir = dst
	return nil
}
