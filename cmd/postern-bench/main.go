// Command postern-bench runs the side-by-side benchmark of `make bench`
// (package bench): Postern on the direct and relayed path next to direct
// TCP, wireguard-go, OpenVPN and ssh -L, in network namespaces.
//
//	postern-bench [--quick] [--repeats N] [--cell D] [--tunnels a,b] [--go-bench=BOOL] [--profile=BOOL]
//	postern-bench render [--results FILE] [--analysis FILE] [--doc FILE]   (Markdown from a stored run)
//	postern-bench agent NAME FLAGS...   (load generators, run by the harness inside namespaces)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"postern.dev/postern/bench"
	"postern.dev/postern/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		if err := bench.AgentMain(ctx, os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "postern-bench agent:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "render" {
		render(os.Args[2:])
		return
	}
	var o bench.Options
	fs := flag.NewFlagSet("postern-bench", flag.ExitOnError)
	fs.BoolVar(&o.Quick, "quick", false, "short run (1 repeat, 1 s cells, 1,000 idle flows, no Go benchmarks): under 2 minutes")
	fs.IntVar(&o.Repeats, "repeats", 0, "repeats of every cell (default 3, quick 1)")
	fs.DurationVar(&o.Cell, "cell", 0, "length of one throughput cell (default 2s, quick 1s)")
	fs.DurationVar(&o.ShortCell, "short-cell", 0, "length of the 4-flow, 64-flow, tbf and CPU cells (default and minimum 1s; longer for profiling them)")
	fs.DurationVar(&o.Probe, "probe", 0, "length of a latency, setup or DNS cell (default 1s, quick 500ms)")
	tunnels := fs.String("tunnels", "", "comma-separated tunnels to measure (default all: "+strings.Join(bench.AllTunnels, ",")+")")
	cells := fs.String("cells", "", "comma-separated parts of cell names: run only those cells (e.g. \"64 flows,under bulk,setup\"; \"idle flows\" for the memory cells, \"short connections\" for the no-stall phase; default all)")
	flows := fs.String("idle-flows", "", "comma-separated idle flow counts for the memory cells (default 1000,10000; quick 1000)")
	goBench := fs.String("go-bench", "", "run the Go benchmarks of the Postern packages (default true, quick false)")
	fs.StringVar(&o.GoBenchTime, "benchtime", "", "go test -benchtime for the Go benchmarks (default 200ms)")
	fs.IntVar(&o.ShortConns, "short-conns", 0, "short connections in a row at each of 1, 8 and 64 workers through Postern's direct path (no-stall check; default 100000, quick 2000; -1 skips)")
	profile := fs.String("profile", "", "perf profile of posternd and the connector under iperf3 (default true, quick false)")
	fs.StringVar(&o.RepoDir, "repo", ".", "repository root")
	fs.StringVar(&o.BinDir, "bin", "", "directory with the Postern programs (default REPO/bin)")
	fs.StringVar(&o.ResultsDir, "results", "", "directory for the JSON results (default REPO/bench/results)")
	fs.StringVar(&o.DocPath, "doc", "", "Markdown report path (default REPO/docs/benchmarks.md; - for none)")
	fs.BoolVar(&o.KeepWork, "keep", false, "keep the work directory (logs, keys) after the run")
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("postern-bench", version.Version)
		return
	}
	if fs.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *cells != "" {
		o.Cells = strings.Split(*cells, ",")
	}
	if *tunnels != "" {
		o.Tunnels = strings.Split(*tunnels, ",")
		for _, t := range o.Tunnels {
			if !contains(bench.AllTunnels, t) {
				fail(fmt.Errorf("--tunnels: unknown tunnel %q (known: %s)", t, strings.Join(bench.AllTunnels, ", ")))
			}
		}
	}
	if *flows != "" {
		for _, s := range strings.Split(*flows, ",") {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				fail(fmt.Errorf("--idle-flows: %q is not a positive number", s))
			}
			o.IdleFlows = append(o.IdleFlows, n)
		}
	}
	o.GoBench = boolFlag("--go-bench", *goBench, !o.Quick)
	o.Profile = boolFlag("--profile", *profile, !o.Quick)
	if o.ResultsDir == "" {
		o.ResultsDir = filepath.Join(o.RepoDir, "bench", "results")
	}
	if o.DocPath == "" {
		o.DocPath = filepath.Join(o.RepoDir, "docs", "benchmarks.md")
	}
	o.Progress = os.Stderr
	rep, err := bench.Run(ctx, o)
	if err != nil {
		fail(err)
	}
	for _, t := range rep.Targets {
		fmt.Printf("%-7s %-16s %-58s %s\n", t.Status, t.Tunnel, t.Name, fmtVal(t.Value, t.Unit))
	}
	fmt.Printf("report: %s\n", o.DocPath)
}

func fmtVal(v float64, unit string) string { return strconv.FormatFloat(v, 'g', 4, 64) + " " + unit }

func boolFlag(name, v string, def bool) bool {
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		fail(fmt.Errorf("%s: %q is not true or false", name, v))
	}
	return b
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "postern-bench:", err)
	os.Exit(1)
}

// render rewrites the Markdown report from a stored JSON result, e.g. after
// editing bench/analysis.md.
func render(args []string) {
	fs := flag.NewFlagSet("postern-bench render", flag.ExitOnError)
	results := fs.String("results", "bench/results/latest-full.json", "stored run (JSON)")
	analysis := fs.String("analysis", "bench/analysis.md", "hand-written analysis to include (missing: none)")
	doc := fs.String("doc", "docs/benchmarks.md", "Markdown report to write")
	_ = fs.Parse(args)
	rep, err := bench.LoadReport(*results)
	if err != nil {
		fail(err)
	}
	if b, err := os.ReadFile(*analysis); err == nil {
		rep.Analysis = string(b)
	}
	if err := rep.Write("", *doc); err != nil {
		fail(err)
	}
	fmt.Println("wrote", *doc)
}
