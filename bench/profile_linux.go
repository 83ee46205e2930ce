package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profile samples posternd and the connector with perf while one iperf3
// flow runs through Postern on the direct path, and keeps the top symbols.
// The programs in bin/ are stripped (-s -w), so perf is pointed (--symfs) at
// copies built from the same tree with the same flags but symbols kept,
// whose text is laid out identically.
func (r *runner) profile(ctx context.Context) {
	ps := &ProfileSummary{}
	r.rep.Profile = ps
	var t *tunnel
	for _, x := range r.tunnels {
		if x.key == TunPosternDirect && x.err == nil && x.alive() == nil {
			t = x
		}
	}
	if t == nil {
		ps.Error = "Postern on the direct path is not up"
		return
	}
	if _, err := exec.LookPath("perf"); err != nil {
		ps.Error = "perf is not installed (Debian linux-perf)"
		return
	}
	symfs := filepath.Join(r.work, "symfs")
	if err := r.buildSymbols(ctx, symfs); err != nil {
		ps.Error = err.Error()
		return
	}
	r.progress("profiling posternd and postern-connector under one iperf3 flow")
	data := filepath.Join(r.work, "perf.data")
	pids := []string{fmt.Sprint(r.pst.daemons[NodeClient].pid()), fmt.Sprint(r.pst.conn.pid())}
	secs := 4.0
	rec := exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-o", data, "-p", strings.Join(pids, ","), "--", "sleep", fmt.Sprint(secs))
	rec.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var recOut strings.Builder
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		ps.Error = fmt.Sprintf("perf record: %v", err)
		return
	}
	time.Sleep(300 * time.Millisecond)
	res, err := r.iperf(ctx, t, secs-1)
	_ = rec.Wait()
	if err != nil {
		ps.Error = fmt.Sprintf("iperf3 under perf: %v", err)
		return
	}
	ps.Gbps = res.gbps()
	ps.Command = "perf record -F 499 -g -p <posternd>,<postern-connector>"
	rep := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm,dso,sym",
		"--percent-limit", "0.7", "--symfs", symfs, "-g", "none")
	out, err := rep.Output()
	if err != nil {
		ps.Error = fmt.Sprintf("perf report: %v (%s)", err, oneLine(recOut.String(), 300))
		return
	}
	ps.Top = parsePerfReport(string(out))
	if len(r.opts.ResultsDir) > 0 {
		f := filepath.Join(r.opts.ResultsDir, "profile-"+r.rep.Mode+".txt")
		if os.MkdirAll(r.opts.ResultsDir, 0o755) == nil && os.WriteFile(f, out, 0o644) == nil {
			ps.Files = append(ps.Files, f)
		}
	}
}

// buildSymbols builds posternd and postern-connector with symbols into
// symfs/<BinDir>/, mirroring the paths perf recorded.
func (r *runner) buildSymbols(ctx context.Context, symfs string) error {
	dir := filepath.Join(symfs, r.opts.BinDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("symfs: %w", err)
	}
	ver, _ := exec.CommandContext(ctx, "git", "-C", r.opts.RepoDir, "describe", "--tags", "--always", "--dirty").Output()
	v := strings.TrimSpace(string(ver))
	if v == "" {
		v = "0.1.0-dev"
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-X postern.dev/postern/version.Version="+v,
		"-o", dir+"/", "./cmd/posternd", "./cmd/postern-connector")
	cmd.Dir = r.opts.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build symbol copies: %w: %s", err, out)
	}
	return nil
}

// parsePerfReport reads `perf report --stdio --sort comm,dso,sym` lines:
// "  12.34%  posternd  posternd  [.] runtime.memmove".
func parsePerfReport(out string) []ProfileLine {
	var lines []ProfileLine
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		sym := strings.Join(f[4:], " ")
		lines = append(lines, ProfileLine{Percent: pct, Command: f[1], Object: f[2], Symbol: sym})
		if len(lines) >= 25 {
			break
		}
	}
	return lines
}
