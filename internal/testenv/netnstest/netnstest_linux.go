package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EtcDir is the directory "ip netns exec NAME" bind-mounts files from, over
// the same names in /etc.
func EtcDir(name string) string { return filepath.Join("/etc/netns", name) }

// Unique returns prefix followed by 6 random hex digits: a namespace or
// interface name no other test on the machine uses. Interface names must
// stay within 15 bytes, so prefix should be at most 9.
func Unique(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// IP runs ip(8) with args and returns its output; the error carries the
// command line and what ip printed.
func IP(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Create makes network namespace name with loopback up. resolvConf becomes
// its /etc/netns/NAME/resolv.conf, written before the namespace exists (an
// empty resolvConf writes a comment only: no resolver); hosts, when not
// empty, becomes its /etc/hosts. When a step fails, what the earlier steps
// made is removed again.
func Create(ctx context.Context, name, resolvConf, hosts string) (err error) {
	if !validName(name) {
		return fmt.Errorf("create namespace %q: a name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'", name)
	}
	dir := EtcDir(name)
	for _, p := range []string{dir, filepath.Join("/run/netns", name)} {
		if _, statErr := os.Stat(p); statErr == nil {
			return fmt.Errorf("create namespace %s: %s already exists", name, p)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, Remove(context.WithoutCancel(ctx), name))
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	if resolvConf == "" {
		resolvConf = "# " + name + ": no resolver\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolvConf), 0o644); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	if hosts != "" {
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
	}
	if _, err := IP(ctx, "netns", "add", name); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	if _, err := IP(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

func validName(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Remove deletes namespace name (its interfaces, and the veth peers of
// those, go with it) and its /etc/netns directory. A namespace that does
// not exist is not an error.
func Remove(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("remove namespace %q: not a namespace name", name)
	}
	var errs []error
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		if _, err := IP(ctx, "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(EtcDir(name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Teardown kills every process still running in namespace name, by the
// pids "ip netns pids" lists, then removes it (see Remove). It is for a
// harness's own namespaces, where every process inside is the harness's.
func Teardown(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("tear down namespace %q: not a namespace name", name)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		if out, err := IP(ctx, "netns", "pids", name); err == nil {
			for _, f := range strings.Fields(out) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	return Remove(ctx, name)
}

// Veth joins namespaces nsA and nsB with a veth pair named devA in nsA and
// devB in nsB. The pair is created inside nsA, with its peer placed in nsB,
// under unique temporary names, then renamed inside each namespace: it
// never exists in the machine's own namespace and a name clash with
// another test cannot happen half-way. The ends stay down.
func Veth(ctx context.Context, nsA, devA, nsB, devB string) error {
	tmp := Unique("")
	tmpA, tmpB := "pstA"+tmp, "pstB"+tmp
	if _, err := IP(ctx, "-n", nsA, "link", "add", tmpA, "type", "veth", "peer", "name", tmpB, "netns", nsB); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", nsA, devA, nsB, devB, err)
	}
	if _, err := IP(ctx, "-n", nsA, "link", "set", tmpA, "name", devA); err != nil {
		_, _ = IP(ctx, "-n", nsA, "link", "del", tmpA)
		return fmt.Errorf("veth %s/%s - %s/%s: rename: %w", nsA, devA, nsB, devB, err)
	}
	if _, err := IP(ctx, "-n", nsB, "link", "set", tmpB, "name", devB); err != nil {
		_, _ = IP(ctx, "-n", nsA, "link", "del", devA)
		return fmt.Errorf("veth %s/%s - %s/%s: rename: %w", nsA, devA, nsB, devB, err)
	}
	return nil
}

// Do runs f on an OS thread switched into namespace name and returns f's
// error. Sockets f opens stay in that namespace after Do returns. Should
// switching back fail, the thread stays locked and ends with its goroutine.
func Do(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", name, err))
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// T is the part of testing.TB the test helpers use; taking it instead of
// testing.TB keeps package testing out of the programs (lab, bench) that
// use the rest of this package.
type T interface {
	Helper()
	Fatal(args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// New creates a namespace named prefix plus 6 random hex digits (see Create
// for resolvConf) and removes it when the test ends. It returns the name.
func New(t T, prefix, resolvConf string) string {
	t.Helper()
	name := Unique(prefix)
	Add(t, name, resolvConf, "")
	return name
}

// Add creates namespace name (see Create) and removes it when the test
// ends; it fails the test when it cannot.
func Add(t T, name, resolvConf, hosts string) {
	t.Helper()
	if err := Create(context.Background(), name, resolvConf, hosts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Remove(context.Background(), name); err != nil {
			t.Errorf("remove test namespace: %v", err)
		}
	})
}

// Link joins nsA and nsB with a veth pair (see Veth), gives each end its
// address (a prefix such as "198.18.0.1/24"; empty for none) and brings
// both up; it fails the test when it cannot.
func Link(t T, nsA, devA, addrA, nsB, devB, addrB string) {
	t.Helper()
	ctx := context.Background()
	if err := Veth(ctx, nsA, devA, nsB, devB); err != nil {
		t.Fatal(err)
	}
	for _, end := range [][3]string{{nsA, devA, addrA}, {nsB, devB, addrB}} {
		if end[2] != "" {
			MustIP(t, "-n", end[0], "addr", "add", end[2], "dev", end[1])
		}
		MustIP(t, "-n", end[0], "link", "set", end[1], "up")
	}
}

// MustIP runs ip(8) with args and returns its output; it fails the test
// when ip fails.
func MustIP(t T, args ...string) string {
	t.Helper()
	out, err := IP(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// In runs f on a thread inside namespace name (see Do); it fails the test
// when the thread cannot switch. f runs on another goroutine: it reports
// failures with t.Error, never t.Fatal.
func In(t T, name string, f func()) {
	t.Helper()
	if err := Do(name, func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}
