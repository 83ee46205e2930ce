package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// GoBenchPackages lists the packages (relative to repo, "./x") whose test
// files define benchmarks, except the harness itself and the lab.
func GoBenchPackages(repo string) ([]string, error) {
	set := map[string]bool{}
	err := filepath.WalkDir(repo, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if path != repo && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || n == "node_modules" || n == "dist") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != repo {
				// Another module (third_party/quic-go): go test from the
				// repository root cannot name its packages.
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("\nfunc Benchmark")) {
			rel, err := filepath.Rel(repo, filepath.Dir(path))
			if err != nil {
				return err
			}
			if rel != "bench" && !strings.HasPrefix(rel, "lab") {
				set["./"+filepath.ToSlash(rel)] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find Go benchmarks: %w", err)
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// RunGoBenchmarks runs `go test -run ^$ -bench . -benchmem -benchtime T`
// package by package and parses the results; a package that fails is
// named in the returned error text while the others still count.
func RunGoBenchmarks(ctx context.Context, repo, benchtime string, progress io.Writer) ([]GoBenchResult, string) {
	pkgs, err := GoBenchPackages(repo)
	if err != nil {
		return nil, err.Error()
	}
	var all []GoBenchResult
	var errs []string
	for _, p := range pkgs {
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", benchtime, "-count", "1", "-timeout", "5m", p)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		res := ParseGoBench(string(out))
		for _, r := range res {
			fmt.Fprintf(progress, "  %s %s %v\n", r.Package, r.Name, r.Metrics)
		}
		all = append(all, res...)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v: %s", p, err, lastLines(string(out), 3)))
		}
	}
	return all, strings.Join(errs, "; ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// ParseGoBench parses `go test -bench` output ("pkg:" lines name the
// package of the benchmark lines that follow).
func ParseGoBench(out string) []GoBenchResult {
	var res []GoBenchResult
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		runs, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		name := f[0]
		// Drop the -GOMAXPROCS suffix.
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		g := GoBenchResult{Package: pkg, Name: name, Runs: runs, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			g.Metrics[f[i+1]] = v
		}
		res = append(res, g)
	}
	return res
}
