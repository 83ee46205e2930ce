package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/lab"
)

// proc is one long-running program the harness started in a namespace,
// supervised the way the lab supervises its programs (lab.Proc).
type proc struct{ *lab.Proc }

// spawn starts args inside namespace ns (see lab.Proc.Start), logging to
// logDir/name.log.
func spawn(logDir, name, ns string, env []string, args ...string) (*proc, error) {
	p := &lab.Proc{Name: name, NS: ns, Args: args, Env: env, LogPath: filepath.Join(logDir, name+".log")}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

func (p *proc) pid() int { return p.PID() }

func (p *proc) running() bool { return p.Running() }

// exited describes how the program ended, with the tail of its log.
func (p *proc) exited() error {
	return fmt.Errorf("%s exited (%v): %s", p.Name, p.ExitErr(), tailFile(p.LogPath, 600))
}

// stop sends SIGTERM to the program's group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) { _ = p.Stop(grace) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// run runs a command in the harness's namespace and returns its stdout; a
// failure includes stderr.
func run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return lab.HostOutput(ctx, stdin, args...)
}

// nsRun runs a command inside a namespace (see run).
func nsRun(ctx context.Context, ns string, stdin io.Reader, args ...string) (string, error) {
	return lab.NSOutput(ctx, ns, stdin, args...)
}

// procCPU is the user+system CPU time of a process (all its threads,
// including those that ended) from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	// The command name may contain spaces; fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux the harness supports.
const clockTicks = 100

// procRSS is a process's resident set size in bytes (VmRSS).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse VmRSS of pid %d: %w", pid, err)
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// withDescendants returns roots and every process descending from them.
func withDescendants(roots []int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
		for _, c := range children[p] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// totalCPU sums procCPU over pids (processes that vanished count as 0).
func totalCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		if c, err := procCPU(p); err == nil {
			t += c
		}
	}
	return t
}

// totalRSS sums procRSS over pids.
func totalRSS(pids []int) int64 {
	var t int64
	for _, p := range pids {
		if r, err := procRSS(p); err == nil {
			t += r
		}
	}
	return t
}
