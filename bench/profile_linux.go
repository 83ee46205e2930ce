package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	if r.symErr != nil {
		ps.Error = r.symErr.Error()
		return
	}
	symfs := filepath.Join(r.work, "symfs")
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
		"--percent-limit", "0.05", "--symfs", symfs, "-g", "none")
	out, err := rep.Output()
	if err != nil {
		ps.Error = fmt.Sprintf("perf report: %v (%s)", err, oneLine(recOut.String(), 300))
		return
	}
	ps.Top, ps.Packages, ps.Categories = parsePerfReport(string(out))
	if len(r.opts.ResultsDir) > 0 {
		f := filepath.Join(r.opts.ResultsDir, "profile-"+r.rep.Mode+".txt")
		if os.MkdirAll(r.opts.ResultsDir, 0o755) == nil && os.WriteFile(f, out, 0o644) == nil {
			ps.Files = append(ps.Files, f)
		}
	}
}

// buildSymbols builds posternd and postern-connector with symbols into
// symfs/<BinDir>/, mirroring the paths perf recorded, with the same GNU
// build ID as the stripped programs so that perf accepts them.
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
	for _, prog := range []string{"posternd", "postern-connector"} {
		id, err := gnuBuildID(r.bin(prog))
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-B 0x"+id+" -X postern.dev/postern/version.Version="+v,
			"-o", filepath.Join(dir, prog), "./cmd/"+prog)
		cmd.Dir = r.opts.RepoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s with symbols: %w: %s", prog, err, out)
		}
		// The copy is only useful if its code is byte for byte the code
		// that ran; otherwise bin/ was built from another tree.
		a, err1 := textHash(r.bin(prog))
		b, err2 := textHash(filepath.Join(dir, prog))
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if a != b {
			return fmt.Errorf("%s was not built from the current tree (its code differs from a fresh build); run make build before profiling", r.bin(prog))
		}
	}
	return nil
}

// textHash is the SHA-256 of an ELF file's .text section.
func textHash(path string) (string, error) {
	b, err := elfSection(path, ".text")
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// gnuBuildID reads the NT_GNU_BUILD_ID note of an ELF file as hex.
func gnuBuildID(path string) (string, error) {
	b, err := elfSection(path, ".note.gnu.build-id")
	if err != nil {
		return "", fmt.Errorf("GNU build id: %w", err)
	}
	if len(b) < 16 {
		return "", fmt.Errorf("%s: malformed build id note", path)
	}
	namesz := binary.LittleEndian.Uint32(b[0:4])
	descsz := binary.LittleEndian.Uint32(b[4:8])
	off := 12 + (int(namesz)+3)&^3
	if off+int(descsz) > len(b) {
		return "", fmt.Errorf("%s: malformed build id note", path)
	}
	return hex.EncodeToString(b[off : off+int(descsz)]), nil
}

// elfSection reads the section called name of the ELF file at path.
func elfSection(path, name string) ([]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(name)
	if sec == nil {
		return nil, fmt.Errorf("%s has no %s section", path, name)
	}
	b, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", name, path, err)
	}
	return b, nil
}

// parsePerfReport reads `perf report --stdio --sort comm,dso,sym` lines
// ("  12.34%  posternd  posternd  [.] runtime.memmove"); unresolved kernel
// addresses (kptr_restrict) are merged into one line per process.
func parsePerfReport(out string) (top []ProfileLine, pkgs []ProfileLine, cats map[string]float64) {
	cats = map[string]float64{}
	var all []ProfileLine
	kernel := map[string]float64{}
	bucket := map[[2]string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
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
		// The object may span several fields ("posternd (deleted)"); the
		// symbol follows the "[.]" or "[k]" marker.
		mark := -1
		for i := 2; i < len(f); i++ {
			if f[i] == "[.]" || f[i] == "[k]" {
				mark = i
				break
			}
		}
		if mark < 3 || mark == len(f)-1 {
			continue
		}
		comm, obj, sym := f[1], strings.Join(f[2:mark], " "), strings.Join(f[mark+1:], " ")
		if strings.HasPrefix(obj, "[kernel") {
			kernel[comm] += pct
			bucket[[2]string{comm, "kernel"}] += pct
			cats[profileCategory("kernel")] += pct
			continue
		}
		all = append(all, ProfileLine{Percent: pct, Command: comm, Object: obj, Symbol: sym})
		bucket[[2]string{comm, symbolPackage(sym)}] += pct
		cats[profileCategory(symbolPackage(sym))] += pct
	}
	for comm, pct := range kernel {
		all = append(all, ProfileLine{Percent: pct, Command: comm, Object: "[kernel]", Symbol: "kernel (syscalls, UDP/TUN I/O; symbols hidden by kptr_restrict)"})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Percent > all[j].Percent })
	if len(all) > 25 {
		all = all[:25]
	}
	for k, pct := range bucket {
		pkgs = append(pkgs, ProfileLine{Percent: pct, Command: k[0], Symbol: k[1]})
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Percent > pkgs[j].Percent })
	if len(pkgs) > 20 {
		pkgs = pkgs[:20]
	}
	return all, pkgs, cats
}

// profileCategory groups a Go package (or "kernel") into a coarse part of
// the data path.
func profileCategory(pkg string) string {
	switch {
	case pkg == "kernel":
		return "kernel (syscalls, UDP and TUN I/O)"
	case strings.HasPrefix(pkg, "github.com/quic-go"):
		return "quic-go"
	case strings.HasPrefix(pkg, "crypto/"), strings.HasPrefix(pkg, "golang.org/x/crypto"):
		return "crypto (AES-GCM)"
	case strings.HasPrefix(pkg, "gvisor.dev"):
		return "gVisor netstack"
	case strings.HasPrefix(pkg, "golang.zx2c4.com/wireguard/tun"):
		return "TUN offload (wireguard/tun)"
	case strings.HasPrefix(pkg, "postern.dev"):
		return "Postern's own code"
	case pkg == "runtime" || pkg == "sync" || strings.HasPrefix(pkg, "internal/runtime") || strings.HasPrefix(pkg, "sync/"):
		return "Go runtime (memmove, scheduler, GC, locks)"
	case strings.HasPrefix(pkg, "golang.org/x/net") || pkg == "syscall" || pkg == "internal/poll" || pkg == "net":
		return "socket wrappers (x/net, syscall, net)"
	}
	return "other"
}

// symbolPackage is the Go package path of a symbol
// ("gvisor.dev/gvisor/pkg/tcpip/stack.(*Stack).X" -> "gvisor.dev/gvisor/pkg/tcpip/stack").
func symbolPackage(sym string) string {
	if strings.HasPrefix(sym, "0x") {
		return "unresolved"
	}
	slash := strings.LastIndexByte(sym, '/')
	rest := sym[slash+1:]
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		return sym[:slash+1+i]
	}
	return sym
}
