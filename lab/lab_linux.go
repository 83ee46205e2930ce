package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/internal/testenv/netnstest"
)

// Node is one network namespace of the lab.
type Node struct {
	Name string // role, e.g. "client"
	NS   string // namespace name, unique per lab
	IP   string // primary address
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	ID  string
	Dir string
	// LogDir holds one log per program (kept after a failure).
	LogDir string
	// Network is the spec applied at start.
	Network NetworkSpec

	// Controller access for admin commands.
	ControllerURL  string
	CAFile         string
	AdminTokenFile string
	// SSHKey is the private key that logs into db.corp.internal as root.
	SSHKey string
	// PGPassword is the password of PostgreSQL user PGUser.
	PGPassword string
	// controllerDBPassword: the replicas' database role (ControllerReplicas).
	controllerDBPassword string
	// Passwords of the demo users.
	Passwords map[string]string

	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	nodes    map[string]*Node
	nsOrder  []string // namespaces created, in order
	procs    map[string]*Proc
	routers  map[string]*routerState
	clients  map[string]*clientState
	bins     map[string]string
	cleanups []func()
}

type clientState struct {
	node   string
	user   string
	proc   string
	state  string // state dir
	socket string
}

// Start builds a lab. On error everything already created is removed again
// (logs are kept and their location is in the error).
func Start(ctx context.Context, opts Options) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab needs %s: %w (run scripts/install-deps.sh)", tool, err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find bin dir: %w", err)
		}
		opts.BinDir = filepath.Dir(exe)
	}
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	l = &Lab{
		ID:        "pl" + hex.EncodeToString(id),
		opts:      opts,
		log:       opts.Logger,
		nodes:     map[string]*Node{},
		procs:     map[string]*Proc{},
		routers:   map[string]*routerState{},
		clients:   map[string]*clientState{},
		bins:      map[string]string{},
		Passwords: map[string]string{Alice: randomSecret(), Bob: randomSecret()},
	}
	l.PGPassword = randomSecret()
	if err := l.findBinaries(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "postern-lab-"+l.ID+"-")
		if err != nil {
			return nil, fmt.Errorf("create lab dir: %w", err)
		}
		opts.Dir = d
		l.opts.Dir = d
	} else if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab dir: %w", err)
	}
	l.Dir = opts.Dir
	// PostgreSQL runs as the postgres user and must reach its data dir.
	if err := os.Chmod(l.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("chmod lab dir: %w", err)
	}
	l.LogDir = filepath.Join(l.Dir, "logs")
	if err := os.MkdirAll(l.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	if opts.Network != nil {
		l.Network = opts.Network.Clone()
	} else {
		l.Network = DemoNetwork(l.Passwords[Alice], l.Passwords[Bob])
	}
	for _, u := range l.Network.Users {
		l.Passwords[u.Email] = u.Password
	}
	defer func() {
		if err != nil {
			_ = l.Close(true)
			err = fmt.Errorf("%w (logs kept in %s)", err, l.LogDir)
		}
	}()
	if ids, err := CleanupStale(ctx); err != nil {
		l.log.Warn("clean up stale labs", "err", err)
	} else if len(ids) > 0 {
		l.progress("removed the namespaces of stale labs %v (their process had died)", ids)
	}
	if err := l.register(); err != nil {
		return l, err
	}
	l.progress("lab %s: building topology (work dir %s)", l.ID, l.Dir)
	if err := l.buildTopology(ctx); err != nil {
		return l, fmt.Errorf("build topology: %w", err)
	}
	if err := l.buildIPv6(ctx); err != nil {
		return l, fmt.Errorf("build topology: %w", err)
	}
	if opts.Underlay6 {
		if err := l.buildUnderlay6(ctx); err != nil {
			return l, fmt.Errorf("build the IPv6 underlay: %w", err)
		}
	}
	if opts.IPv6OnlyClient {
		if err := l.buildNAT64(ctx); err != nil {
			return l, fmt.Errorf("build the IPv6-only client network: %w", err)
		}
	}
	l.progress("lab %s: starting private and public services", l.ID)
	if err := l.startServices(ctx); err != nil {
		return l, fmt.Errorf("start services: %w", err)
	}
	if opts.Postern {
		if err := l.deployPostern(ctx); err != nil {
			return l, fmt.Errorf("deploy postern: %w", err)
		}
	}
	return l, nil
}

func randomSecret() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (l *Lab) progress(format string, args ...any) {
	fmt.Fprintf(l.opts.Progress, format+"\n", args...)
}

var programs = []string{"postern-controller", "postern-relay", "postern-connector", "posternd", "postern", "postern-lab"}

func (l *Lab) findBinaries() error {
	need := []string{"postern-lab"}
	if l.opts.Postern {
		need = programs
	}
	for _, p := range need {
		path := filepath.Join(l.opts.BinDir, p)
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%w: %s", ErrMissingBinary, path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("find %s: %w", p, err)
		}
		l.bins[p] = abs
	}
	return nil
}

// Bin is the absolute path of a program in the bin directory.
func (l *Lab) Bin(name string) string {
	if p, ok := l.bins[name]; ok {
		return p
	}
	return filepath.Join(l.opts.BinDir, name)
}

// ReachableConnectors reports whether the corporate NAT lets clients reach
// the connectors' QUIC port (Options.ReachableConnectors).
func (l *Lab) ReachableConnectors() bool { return l.opts.ReachableConnectors }

// Node returns a node by role name.
func (l *Lab) Node(name string) (*Node, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.nodes[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownNode, name)
	}
	return n, nil
}

// NS is the namespace name of a node ("" if unknown).
func (l *Lab) NS(node string) string {
	n, err := l.Node(node)
	if err != nil {
		return ""
	}
	return n.NS
}

// Nodes lists the nodes, sorted by name.
func (l *Lab) Nodes() []Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Node
	for _, n := range l.nodes {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Command prepares a command inside a node's namespace (`ip netns exec`).
func (l *Lab) Command(ctx context.Context, node string, args ...string) (*exec.Cmd, error) {
	n, err := l.Node(node)
	if err != nil {
		return nil, err
	}
	return nsCommand(ctx, n.NS, args...), nil
}

// Exec runs a command inside a node's namespace and returns its combined
// output; a non-zero exit is a *CmdError wrapping the *exec.ExitError.
func (l *Lab) Exec(ctx context.Context, node string, args ...string) (string, error) {
	return l.ExecInput(ctx, node, nil, args...)
}

// ExecInput is Exec with stdin.
func (l *Lab) ExecInput(ctx context.Context, node string, stdin io.Reader, args ...string) (string, error) {
	cmd, err := l.Command(ctx, node, args...)
	if err != nil {
		return "", err
	}
	return combinedOutput(cmd, node, stdin, args)
}

// Spawn starts a long-running program in a node's namespace under a unique
// name; Stop, Restart and Kill then address it by that name, and Close ends it.
func (l *Lab) Spawn(name, node string, env []string, args ...string) (*Proc, error) {
	n, err := l.Node(node)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := l.procs[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("spawn %s: name already used", name)
	}
	p := &Proc{Name: name, Node: node, NS: n.NS, Args: args, Env: env, LogPath: filepath.Join(l.LogDir, name+".log")}
	l.procs[name] = p
	l.mu.Unlock()
	if err := p.Start(); err != nil {
		return nil, err
	}
	l.log.Debug("spawned", "name", name, "node", node, "pid", p.PID())
	return p, nil
}

// Proc returns a program by name.
func (l *Lab) Proc(name string) (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.procs[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProgram, name)
	}
	return p, nil
}

// Programs lists the program names.
func (l *Lab) Programs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n := range l.procs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Close ends every program, deletes every namespace and /etc/netns entry
// the lab made. With failed set (or on any error) the work directory and
// logs are kept and their location printed to Progress; otherwise the work
// directory is removed.
func (l *Lab) Close(failed bool) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := make([]*Proc, 0, len(l.procs))
	for _, p := range l.procs {
		procs = append(procs, p)
	}
	nss := slices.Clone(l.nsOrder)
	cleanups := l.cleanups
	l.mu.Unlock()

	var errs []error
	// Clients first, so daemons can restore what they changed.
	sort.SliceStable(procs, func(i, j int) bool { return stopOrder(procs[i].Name) < stopOrder(procs[j].Name) })
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(3 * time.Second); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(ctx, nss[i]); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if failed || err != nil {
		l.progress("lab %s: logs of every program kept in %s", l.ID, l.LogDir)
		for _, p := range procs {
			l.progress("  %-28s %s", p.Name, p.LogPath)
		}
	} else if l.Dir != "" {
		if rerr := os.RemoveAll(l.Dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove lab dir: %w", rerr))
		}
	}
	return err
}

func stopOrder(name string) int {
	switch {
	case strings.HasPrefix(name, "posternd"):
		return 0
	case strings.HasPrefix(name, "postern-connector"):
		return 1
	case strings.HasPrefix(name, "postern-"):
		return 2
	}
	return 3
}

// deleteNamespace kills whatever still runs inside ns (every process in it
// belongs to the lab), then removes the namespace and its /etc/netns dir.
func deleteNamespace(ctx context.Context, ns string) error {
	return netnstest.Teardown(ctx, ns)
}

// WaitFor polls check every 200 ms until it succeeds, or fails with
// ErrTimeout naming what and check's last error when timeout passes or ctx
// ends (the lab's waits and the benchmark harness's).
func WaitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s waiting for %s: %v", ErrTimeout, timeout, what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
