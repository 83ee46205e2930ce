package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"postern.dev/postern/localapi"
)

// ControlPlane is a running controller as its administrator reaches it:
// the postern-controller admin commands, run in namespace NS against URL
// with the deployment's CA and admin token. The lab deploys Postern through
// it, and so does the benchmark on its own topology.
type ControlPlane struct {
	Bin            func(name string) string // path of a Postern program
	NS             string                   // where the admin commands run
	URL            string
	CAFile         string
	AdminTokenFile string
	Dir            string // where applied network.yaml files are written
}

func (c *ControlPlane) adminArgs(sub, url string) []string {
	return []string{c.Bin("postern-controller"), sub, "--url", url, "--ca", c.CAFile, "--token-file", c.AdminTokenFile}
}

// Wait waits until the controller ctl (nil: not started here) has written
// its CA and admin token and answers /healthz.
func (c *ControlPlane) Wait(ctx context.Context, ctl *Proc, timeout time.Duration) error {
	return WaitFor(ctx, timeout, "postern-controller", func() error {
		if ctl != nil && !ctl.Running() {
			return fmt.Errorf("postern-controller exited (%v); see %s", ctl.ExitErr(), ctl.LogPath)
		}
		for _, f := range []string{c.CAFile, c.AdminTokenFile} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("controller has not created %s yet", f)
			}
		}
		_, err := NSExec(ctx, c.NS, nil, "curl", "-sSf", "--max-time", "3", "--cacert", c.CAFile, c.URL+"/healthz")
		return err
	})
}

// Apply makes the controller (replica) at url match spec with
// `postern-controller apply`.
func (c *ControlPlane) Apply(ctx context.Context, url string, spec NetworkSpec) error {
	b, err := spec.YAML()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.Dir, "network-*.yaml")
	if err != nil {
		return fmt.Errorf("write network.yaml: %w", err)
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("write network.yaml: %w", err)
	}
	if out, err := NSExec(ctx, c.NS, nil, append(c.adminArgs("apply", url), "-f", f.Name())...); err != nil {
		return fmt.Errorf("apply %s: %w\n%s", f.Name(), err, out)
	}
	return nil
}

// Admin runs a postern-controller admin subcommand with --url, --ca and
// --token-file filled in and returns its standard output.
func (c *ControlPlane) Admin(ctx context.Context, sub string, args ...string) (string, error) {
	return NSOutput(ctx, c.NS, nil, append(c.adminArgs(sub, c.URL), args...)...)
}

// EnrollToken mints the one-time token a relay ("relay-token") or a
// connector ("connector-token") named name enrolls with.
func (c *ControlPlane) EnrollToken(ctx context.Context, sub, name string) (string, error) {
	out, err := c.Admin(ctx, sub, name)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", sub, name, err)
	}
	return LastLine(out), nil
}

// ClientCLI is the postern command line of one client device: posternd's
// local API socket in namespace NS.
type ClientCLI struct {
	Bin    func(name string) string
	NS     string
	Socket string
}

// Run runs `postern --socket SOCKET args...` and returns its combined output.
func (c ClientCLI) Run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return NSExec(ctx, c.NS, stdin, append([]string{c.Bin("postern"), "--socket", c.Socket}, args...)...)
}

// Login signs the device in as user with `postern login --password-stdin`
// and brings the tunnel up with `postern up`.
func (c ClientCLI) Login(ctx context.Context, cp *ControlPlane, user, password string) error {
	if out, err := c.Run(ctx, strings.NewReader(password+"\n"), "login", "--controller", cp.URL, "--ca", cp.CAFile,
		"--user", user, "--password-stdin"); err != nil {
		return fmt.Errorf("postern login as %s: %w\n%s", user, err, out)
	}
	if out, err := c.Run(ctx, nil, "up"); err != nil {
		return fmt.Errorf("postern up as %s: %w\n%s", user, err, out)
	}
	return nil
}

// Status is `postern status --json`.
func (c ClientCLI) Status(ctx context.Context) (localapi.Status, error) {
	var st localapi.Status
	out, err := NSOutput(ctx, c.NS, nil, c.Bin("postern"), "--socket", c.Socket, "status", "--json")
	if err != nil {
		return st, fmt.Errorf("postern status --json: %w", err)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("postern status --json: %w: %q", err, out)
	}
	return st, nil
}

// WaitFile waits until program p has created path (a socket, a key file).
func WaitFile(ctx context.Context, p *Proc, path string, timeout time.Duration) error {
	return WaitFor(ctx, timeout, p.Name+" to create "+path, func() error {
		if !p.Running() {
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.ExitErr(), p.LogPath)
		}
		_, err := os.Stat(path)
		return err
	})
}

// nsCommand is "ip netns exec NS args..." with the harness's environment.
func nsCommand(ctx context.Context, ns string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = os.Environ()
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// NSExec runs a command inside namespace ns and returns its combined
// output; a non-zero exit is a *CmdError wrapping the *exec.ExitError.
func NSExec(ctx context.Context, ns string, stdin io.Reader, args ...string) (string, error) {
	return combinedOutput(nsCommand(ctx, ns, args...), ns, stdin, args)
}

// NSOutput runs a command inside namespace ns and returns its standard
// output only (standard error goes into the *CmdError when it fails).
func NSOutput(ctx context.Context, ns string, stdin io.Reader, args ...string) (string, error) {
	return stdoutOnly(nsCommand(ctx, ns, args...), ns, stdin, args)
}

// HostOutput runs a command in the harness's own namespace (only ip, nft,
// key generators and the like that address test namespaces explicitly)
// and returns its standard output only.
func HostOutput(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = 2 * time.Second
	return stdoutOnly(cmd, "host", stdin, args)
}

// combinedOutput runs cmd (args run where "where" names) and returns its
// combined output.
func combinedOutput(cmd *exec.Cmd, where string, stdin io.Reader, args []string) (string, error) {
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CmdError{Args: append([]string{where + "$"}, args...), Output: string(out), Err: err}
	}
	return string(out), nil
}

// stdoutOnly runs cmd and returns its standard output; its standard error
// goes into the error when it fails.
func stdoutOnly(cmd *exec.Cmd, where string, stdin io.Reader, args []string) (string, error) {
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CmdError{Args: append([]string{where + "$"}, args...), Output: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}

// LastLine is the last non-empty line of a command's output (where the
// admin commands print a token).
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
