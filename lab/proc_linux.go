package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one long-running program the lab started inside a namespace. Its
// output goes to its own log file (appended across restarts).
type Proc struct {
	Name    string
	Node    string
	NS      string
	Args    []string
	Env     []string // added to the lab's environment
	LogPath string
	Stdin   string // written to the program's stdin, if set

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	exitErr  error
	starts   int
	stopping bool
}

// Running reports whether the program is running.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// PID is the program's process id (0 when not running).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the current run of the program ends.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is how the last run ended.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Start runs the program: "ip netns exec NS Args..." (ip replaces itself
// with the program, so the pid is the program's) in its own process group,
// with a parent-death signal, its output appended to LogPath. A Proc made
// outside a Lab needs Name, NS, Args and LogPath; Start again after the
// program ended restarts it.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("start %s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: open log: %w", p.Name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== %s start #%d in netns %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.starts, p.NS, strings.Join(p.Args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.NS}, p.Args...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), p.Env...)
	if p.Stdin != "" {
		cmd.Stdin = strings.NewReader(p.Stdin)
	}
	// Own process group so that Stop reaches the program's children; a
	// parent-death signal so that a crashed lab leaves no programs behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopping = cmd, done, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== %s exit: %v\n", time.Now().UTC().Format(time.RFC3339Nano), exitString(err))
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitString(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// Stop ends the program: SIGTERM to its process group, SIGKILL after grace.
// A program that already ended has the rest of its group killed.
func (p *Proc) Stop(grace time.Duration) error {
	cmd, done := p.markStopping()
	if cmd == nil || done == nil {
		return nil
	}
	pid := cmd.Process.Pid
	select {
	case <-done:
		// Nothing of the ended program's group may linger.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return nil
	default:
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
		// The leader is gone; make sure nothing of its group lingers.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop %s: pid %d did not exit after SIGKILL", p.Name, pid)
	}
}

// markStopping records that the program is being stopped on purpose and
// returns its process and the channel closed when it has ended (nil when it
// never started).
func (p *Proc) markStopping() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = true
	return p.cmd, p.done
}

// kill ends the program at once (SIGKILL to its group), like a crash.
func (p *Proc) kill() error {
	cmd, done := p.markStopping()
	if cmd == nil || done == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("kill %s: pid %d did not exit", p.Name, cmd.Process.Pid)
	}
}

// CmdError is a failed command with its output.
type CmdError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CmdError) Error() string {
	out := strings.TrimSpace(e.Output)
	if len(out) > 2000 {
		out = out[:2000] + "..."
	}
	if out == "" {
		return fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, out)
}

func (e *CmdError) Unwrap() error { return e.Err }

// run runs a command in the root namespace (only ip, nft and friends that
// address lab namespaces explicitly) and returns its combined output.
func run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = stdin
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CmdError{Args: args, Output: string(out), Err: err}
	}
	return string(out), nil
}

// ExitCode extracts a command's exit code from an error of Exec (-1 when
// the command did not run to an exit).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
