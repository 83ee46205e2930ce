package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of one run (written as JSON and Markdown).
type Report struct {
	Started          time.Time       `json:"started"`
	Finished         time.Time       `json:"finished"`
	DurationSec      float64         `json:"duration_s"`
	Mode             string          `json:"mode"`
	Repeats          int             `json:"repeats"`
	CellSeconds      float64         `json:"cell_s"`
	ShortCellSeconds float64         `json:"short_cell_s"`
	ProbeSeconds     float64         `json:"probe_s"`
	FixedRate        string          `json:"cpu_cell_rate"`
	RateLimit        string          `json:"tbf_rate"`
	ShortConns       int             `json:"short_conns,omitempty"`
	Commit           string          `json:"commit"`
	Machine          Machine         `json:"machine"`
	Tunnels          []TunnelResult  `json:"tunnels"`
	Targets          []TargetResult  `json:"targets"`
	GoBench          []GoBenchResult `json:"go_benchmarks,omitempty"`
	GoBenchError     string          `json:"go_benchmarks_error,omitempty"`
	Profile          *ProfileSummary `json:"profile,omitempty"`
	Notes            []string        `json:"notes,omitempty"`
	// Analysis is the hand-written reading of the results
	// (bench/analysis.md), rendered into the Markdown; not stored in JSON.
	Analysis string `json:"-"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	MemMiB int    `json:"mem_mib"`
	// LoadAvg is /proc/loadavg at the start and the end of the run: the
	// machine is shared, so absolute figures move; ratios within a run hold.
	LoadAvg []string          `json:"loadavg"`
	Go      string            `json:"go"`
	Tools   map[string]string `json:"tools"`
}

// TunnelResult holds one tunnel's summaries by metric key.
type TunnelResult struct {
	Key        string             `json:"key"`
	Label      string             `json:"label"`
	Detail     string             `json:"detail,omitempty"`
	Error      string             `json:"error,omitempty"`
	CellErrors []string           `json:"cell_errors,omitempty"`
	Metrics    map[string]Summary `json:"metrics"`
}

// TargetResult is one target of issue 10 (or of the datapath issues)
// compared with a Postern row.
type TargetResult struct {
	Name      string  `json:"name"`
	Target    string  `json:"target"`
	Tunnel    string  `json:"tunnel"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit"`
	Status    string  `json:"status"` // met, missed, n/a
	Reference string  `json:"reference,omitempty"`
}

// GoBenchResult is one line of `go test -bench` output.
type GoBenchResult struct {
	Package string             `json:"package"`
	Name    string             `json:"name"`
	Runs    int64              `json:"runs"`
	Metrics map[string]float64 `json:"metrics"` // unit -> value, e.g. "ns/op"
}

// ProfileSummary says where posternd and the connector spend their CPU.
type ProfileSummary struct {
	Command string        `json:"command"`
	Gbps    float64       `json:"gbps"`
	Top     []ProfileLine `json:"top"`
	// Packages sums self time by process and Go package (or "kernel").
	Packages []ProfileLine `json:"packages"`
	// Categories sums self time over every symbol by part of the data
	// path (kernel, quic-go, crypto, gVisor, runtime, ...).
	Categories map[string]float64 `json:"categories,omitempty"`
	Error      string             `json:"error,omitempty"`
	Files      []string           `json:"files,omitempty"`
}

// ProfileLine is one symbol of the profile.
type ProfileLine struct {
	Percent float64 `json:"percent"`
	Command string  `json:"command"`
	Object  string  `json:"object"`
	Symbol  string  `json:"symbol"`
}

// MarshalJSON encodes a target with null for a missing value.
func (t TargetResult) MarshalJSON() ([]byte, error) {
	type plain TargetResult
	return json.Marshal(struct {
		plain
		Value     jsonNum `json:"value"`
		Threshold jsonNum `json:"threshold"`
	}{plain(t), jsonNum(t.Value), jsonNum(t.Threshold)})
}

func (r *Report) tunnel(key string) *TunnelResult {
	for i := range r.Tunnels {
		if r.Tunnels[i].Key == key {
			return &r.Tunnels[i]
		}
	}
	return nil
}

func (r *Report) median(key, metric string) float64 {
	t := r.tunnel(key)
	if t == nil {
		return math.NaN()
	}
	s, ok := t.Metrics[metric]
	if !ok || !s.Valid() {
		return math.NaN()
	}
	return s.Median
}

// Evaluate fills Targets from the tunnels' medians.
func (r *Report) Evaluate() {
	r.Targets = nil
	for _, pk := range []string{TunPosternDirect, TunPosternRelay} {
		if r.tunnel(pk) == nil {
			continue
		}
		wgUp, wgDown := r.median(TunWireGuard, MTputUp1), r.median(TunWireGuard, MTputDown1)
		ovUp := r.median(TunOpenVPN, MTputUp1)
		wg64 := r.median(TunWireGuard, MTputUp64)
		add := func(name, target, metric, unit string, threshold float64, higherBetter bool, ref string) {
			v := r.median(pk, metric)
			st := "n/a"
			switch {
			case math.IsNaN(v) || math.IsNaN(threshold):
			case higherBetter && v >= threshold, !higherBetter && v <= threshold:
				st = "met"
			default:
				st = "missed"
			}
			r.Targets = append(r.Targets, TargetResult{Name: name, Target: target, Tunnel: pk, Value: v,
				Threshold: threshold, Unit: unit, Status: st, Reference: ref})
		}
		add("single flow up ≥ wireguard-go", "≥ 1× wireguard-go", MTputUp1, "Gbit/s", wgUp, true, fmt.Sprintf("wireguard-go %s", fmtNum(wgUp)))
		add("single flow down ≥ wireguard-go", "≥ 1× wireguard-go", MTputDown1, "Gbit/s", wgDown, true, fmt.Sprintf("wireguard-go %s", fmtNum(wgDown)))
		add("single flow ≥ 3× OpenVPN", "≥ 3× OpenVPN", MTputUp1, "Gbit/s", 3*ovUp, true, fmt.Sprintf("OpenVPN %s", fmtNum(ovUp)))
		add("64-flow aggregate ≥ 1.5× wireguard-go", "≥ 1.5× wireguard-go", MTputUp64, "Gbit/s", 1.5*wg64, true, fmt.Sprintf("wireguard-go %s", fmtNum(wg64)))
		add("under "+r.RateLimit+" tbf ≥ 96% of direct", "≥ 0.96", MTbfFraction, "× direct", 0.96, true,
			fmt.Sprintf("direct %s Gbit/s", fmtNum(r.median(TunDirect, MTbf))))
		add("request/response p99 under bulk ≤ 1 ms", "≤ 1000 µs", MRRBulkP99, "µs", 1000, false,
			fmt.Sprintf("wireguard-go %s, ssh -L %s", fmtNum(r.median(TunWireGuard, MRRBulkP99)), fmtNum(r.median(TunSSH, MRRBulkP99))))
		add("request/response p99 under bulk ≤ the same with the bulk outside the tunnel (issue 15)", "≤ bulk outside", MRRBulkP99, "µs",
			r.median(pk, MRRBulkOutP99), false, fmt.Sprintf("bulk outside the tunnel: p99 %s µs, p50 %s µs (under bulk p50 %s µs)",
				fmtNum(r.median(pk, MRRBulkOutP99)), fmtNum(r.median(pk, MRRBulkOutP50)), fmtNum(r.median(pk, MRRBulkP50))))
		add("connection setup p50 ≤ 250 µs", "≤ 250 µs", MSetupP50, "µs", 250, false,
			fmt.Sprintf("wireguard-go %s", fmtNum(r.median(TunWireGuard, MSetupP50))))
		add("CPU ≤ 3 core-seconds per GB", "≤ 3 s/GB", MCPUPerGB, "s/GB", 3, false,
			fmt.Sprintf("wireguard-go %s, OpenVPN %s", fmtNum(r.median(TunWireGuard, MCPUPerGB)), fmtNum(r.median(TunOpenVPN, MCPUPerGB))))
		add("memory per idle flow ≤ 30 KiB at 10,000 flows (issue 4)", "≤ 30 KiB", MMemPerFlow+"10000", "KiB", 30, false, "")
		if pk == TunPosternDirect && r.ShortConns > 0 {
			for _, w := range shortConnWorkers {
				ws := fmt.Sprint(w)
				over, errs := r.median(pk, MShortOver+ws), r.median(pk, MShortErrors+ws)
				v := over + errs
				st := "n/a"
				switch {
				case math.IsNaN(v):
				case v == 0:
					st = "met"
				default:
					st = "missed"
				}
				r.Targets = append(r.Targets, TargetResult{Name: fmt.Sprintf("%d short connections in a row, %d at a time: none over 100 ms or failing (issue 15)", r.ShortConns, w),
					Target: "0", Tunnel: pk, Value: v, Threshold: 0, Unit: "slow or failed", Status: st,
					Reference: fmt.Sprintf("slowest %s µs", fmtNum(r.median(pk, MShortMaxUs+ws)))})
			}
		}
		if pk == TunPosternDirect {
			add("DNS resource-name queries ≥ 100,000/s (issue 5)", "≥ 100000 q/s", MDNSResource, "q/s", 100000, true,
				fmt.Sprintf("upstream queried directly %s q/s", fmtNum(r.median(TunDirect, MDNSUpstream))))
		}
	}
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Write stores the report as JSON (latest.json and a timestamped copy) in
// resultsDir and as Markdown at docPath ("" skips either).
func (r *Report) Write(resultsDir, docPath string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if resultsDir != "" {
		if err := os.MkdirAll(resultsDir, 0o755); err != nil {
			return fmt.Errorf("results dir: %w", err)
		}
		name := fmt.Sprintf("%s-%s.json", r.Started.Format("20060102T150405Z"), r.Mode)
		for _, n := range []string{name, "latest-" + r.Mode + ".json"} {
			if err := os.WriteFile(filepath.Join(resultsDir, n), append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("write results: %w", err)
			}
		}
		if err := os.WriteFile(filepath.Join(resultsDir, "latest-"+r.Mode+".md"), []byte(r.Markdown()), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
	}
	if docPath != "" && docPath != "-" {
		if err := os.MkdirAll(filepath.Dir(docPath), 0o755); err != nil {
			return fmt.Errorf("doc dir: %w", err)
		}
		if err := os.WriteFile(docPath, []byte(r.Markdown()), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", docPath, err)
		}
	}
	return nil
}

// describeMachine reads CPU, cores, kernel and memory, and tool versions.
func describeMachine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Tools: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadAvg = append(m.LoadAvg, loadAvg())
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemMiB = kb / 1024
		}
	}
	for tool, args := range map[string][]string{
		"iperf3": {"iperf3", "--version"}, "openvpn": {"openvpn", "--version"}, "ssh": {"ssh", "-V"},
		"wg": {"wg", "--version"}, "go": {"go", "version"},
	} {
		out, _ := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); line != "" {
			m.Tools[tool] = line
		}
	}
	return m
}

// gitCommit is HEAD, with "+dirty" when the tree has changes.
func gitCommit(ctx context.Context, dir string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
