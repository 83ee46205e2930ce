package bench

import (
	"io"
	"strings"
	"time"
)

// Options configure a benchmark run.
type Options struct {
	// Quick is the short mode (one repeat, short cells, 1,000 idle flows
	// only, no Go benchmarks); the whole run stays under 2 minutes.
	Quick bool
	// Repeats of every cell (default 3, quick 1).
	Repeats int
	// Cell is the length of one throughput cell, whole seconds (default
	// 2 s, quick 1 s).
	Cell time.Duration
	// ShortCell is the length of the 4-flow, 64-flow, tbf and CPU cells
	// (default 1 s).
	ShortCell time.Duration
	// Probe is the length of a latency, setup or DNS cell (default 1 s,
	// quick 0.5 s).
	Probe time.Duration
	// Tunnels to measure (default AllTunnels).
	Tunnels []string
	// Cells, when set, runs only the cells whose name contains one of
	// these strings (e.g. "64 flows", "under bulk", "setup"; "idle flows"
	// selects the memory cells), for quick A/B comparisons.
	Cells []string
	// IdleFlows are the flow counts of the memory cells (default 1,000 and
	// 10,000; quick 1,000).
	IdleFlows []int
	// ShortConns is how many short connections (connect, one echo, close)
	// the no-stall phase opens in a row through Postern's direct path at
	// each of 1, 8 and 64 workers (default 100,000; quick 2,000; negative
	// skips the phase).
	ShortConns int
	// FixedRate is the iperf3 rate of the CPU-per-GB cell (default 500M).
	FixedRate string
	// RateLimit is the tbf rate of the rate-limited cell (default 1gbit).
	RateLimit string
	// GoBench runs the Go benchmarks of the Postern packages afterwards.
	GoBench bool
	// GoBenchTime is go test's -benchtime (default 200ms).
	GoBenchTime string
	// Profile records a CPU profile (perf) of posternd and the connector
	// under a single-flow iperf3 and summarizes where the time goes.
	Profile bool
	// RepoDir is the repository root (go.mod, git); BinDir holds the
	// Postern programs (default RepoDir/bin).
	RepoDir string
	BinDir  string
	// ResultsDir receives the JSON (default RepoDir/bench/results); DocPath
	// the Markdown (default RepoDir/docs/benchmarks.md; "-" skips it).
	ResultsDir string
	DocPath    string
	// AgentBin is the program that runs `AGENT agent NAME ...` (default:
	// the running executable).
	AgentBin string
	// KeepWork keeps the work directory (logs, keys) after the run.
	KeepWork bool
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

// wantCell says whether the cell named name is selected by Cells.
func (o *Options) wantCell(name string) bool {
	if len(o.Cells) == 0 {
		return true
	}
	for _, c := range o.Cells {
		if strings.Contains(name, c) {
			return true
		}
	}
	return false
}

func (o *Options) defaults() {
	if o.Repeats <= 0 {
		o.Repeats = 3
		if o.Quick {
			o.Repeats = 1
		}
	}
	if o.Cell <= 0 {
		o.Cell = 2 * time.Second
		if o.Quick {
			o.Cell = time.Second
		}
	}
	o.ShortCell = o.ShortCell.Round(time.Second)
	if o.ShortCell < time.Second {
		o.ShortCell = time.Second
	}
	if o.Probe <= 0 {
		o.Probe = time.Second
		if o.Quick {
			o.Probe = 500 * time.Millisecond
		}
	}
	// iperf3 takes whole seconds.
	o.Cell = o.Cell.Round(time.Second)
	if o.Cell < time.Second {
		o.Cell = time.Second
	}
	if len(o.Tunnels) == 0 {
		o.Tunnels = AllTunnels
	}
	if o.ShortConns == 0 {
		o.ShortConns = 100000
		if o.Quick {
			o.ShortConns = 2000
		}
	}
	if len(o.IdleFlows) == 0 {
		o.IdleFlows = []int{1000, 10000}
		if o.Quick {
			o.IdleFlows = []int{1000}
		}
	}
	if o.FixedRate == "" {
		o.FixedRate = "500M"
	}
	if o.RateLimit == "" {
		o.RateLimit = "1gbit"
	}
	if o.GoBenchTime == "" {
		o.GoBenchTime = "100ms"
	}
	if o.RepoDir == "" {
		o.RepoDir = "."
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}
