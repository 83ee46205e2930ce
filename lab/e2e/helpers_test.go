//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
	"postern.dev/postern/localapi"
)

// result of one client command.
type result struct {
	out     string
	err     error
	elapsed time.Duration
}

// run runs a command in a client namespace with a timeout; extra env is
// added (e.g. PGPASSWORD).
func run(t *testing.T, node string, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	l := getLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, err := l.Command(ctx, node, args...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, env...)
	start := time.Now()
	b, err := cmd.CombinedOutput()
	return result{out: string(b), err: err, elapsed: time.Since(start)}
}

// must runs a command that has to succeed.
func must(t *testing.T, node string, timeout time.Duration, env []string, args ...string) string {
	t.Helper()
	r := run(t, node, timeout, env, args...)
	if r.err != nil {
		t.Fatalf("%s$ %s: %v (after %s)\n%s", node, strings.Join(args, " "), r.err, r.elapsed.Round(time.Millisecond), r.out)
	}
	return r.out
}

func sshArgs(extra ...string) []string {
	return append([]string{"ssh", "-o", "ConnectTimeout=10"}, extra...)
}

func sshHostname(t *testing.T, node string) result {
	t.Helper()
	return run(t, node, 20*time.Second, nil, sshArgs(lab.DBName, "hostname")...)
}

func pgEnv(l *lab.Lab) []string {
	return []string{"PGPASSWORD=" + l.PGPassword, "PGCONNECT_TIMEOUT=10"}
}

func curlArgs(url string, extra ...string) []string {
	return append(append([]string{"curl", "-sS", "--max-time", "10"}, extra...), url)
}

func status(t *testing.T, node string) localapi.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := getLab(t).Status(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// inSynthetic reports whether s is an address of the default synthetic
// range 100.96.0.0/12 or an IPv6 ULA (fc00::/7).
func inSynthetic(s string) bool {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return false
	}
	return netip.MustParsePrefix("100.96.0.0/12").Contains(a) || netip.MustParsePrefix("fc00::/7").Contains(a)
}

// workingLab is the shared lab, checked to work (alice reaches db over SSH
// within 20 s) before a test changes it.
func workingLab(t *testing.T) *lab.Lab {
	t.Helper()
	l := getLab(t)
	assertAccessWorks(t, 20*time.Second)
	return l
}

// assertAccessWorks is the quick check that alice reaches db over SSH
// again (after a test changed something).
func assertAccessWorks(t *testing.T, within time.Duration) {
	t.Helper()
	testenv.Poll(t, within, "ssh db.corp.internal from alice's laptop", func() error {
		r := sshHostname(t, lab.NodeClient)
		if r.err != nil {
			return &cmdFailure{r}
		}
		return nil
	})
}

// routerFault switches a fault on at router for the rest of the test (set
// is one of the lab's switches: l.BlockUDP, l.SymmetricNAT). At cleanup the
// fault is switched off again and access must work again within 30 s.
func routerFault(t *testing.T, set func(context.Context, string, bool) error, router, what string) {
	t.Helper()
	if err := set(context.Background(), router, true); err != nil {
		t.Fatalf("%s at %s: %v", what, router, err)
	}
	t.Cleanup(func() {
		if err := set(context.Background(), router, false); err != nil {
			t.Errorf("undo %s at %s: %v", what, router, err)
		}
		assertAccessWorks(t, 30*time.Second)
	})
}

// applyNetwork applies spec to the shared lab for the rest of the test. At
// cleanup the lab's own network.yaml is applied again and access must work
// again within 30 s.
func applyNetwork(ctx context.Context, t *testing.T, l *lab.Lab, spec lab.NetworkSpec) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := l.Apply(ctx, l.Network); err != nil {
			t.Errorf("restore network.yaml: %v", err)
			return
		}
		assertAccessWorks(t, 30*time.Second)
	})
	if err := l.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
}

// firstNewSSH opens new SSH sessions to db (connect timeout connectTimeout
// seconds) until one succeeds, failing the test when none does within 30 s
// of since; it returns how long after since the first one succeeded.
func firstNewSSH(t *testing.T, since time.Time, connectTimeout int, after string) time.Duration {
	t.Helper()
	var last result
	for time.Since(since) < 30*time.Second {
		last = run(t, lab.NodeClient, 10*time.Second, nil, sshArgs("-o", fmt.Sprintf("ConnectTimeout=%d", connectTimeout), lab.DBName, "hostname")...)
		if last.err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last.err != nil {
		t.Fatalf("no new ssh succeeded within 30 s of %s: %v\n%s", after, last.err, last.out)
	}
	return time.Since(since)
}

type cmdFailure struct{ r result }

func (c *cmdFailure) Error() string {
	return c.r.err.Error() + ": " + strings.TrimSpace(c.r.out)
}

// waitPaths waits until alice's daemon has at least one connected
// connector and every connected connector uses path over transport ("" =
// any transport). Connections that died with a fault stay "connected" until
// the daemon notices (a few seconds), so the check is repeated.
func waitPaths(t *testing.T, timeout time.Duration, path, transport string) localapi.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	var last localapi.Status
	err := getLab(t).WaitStatus(ctx, lab.NodeClient, timeout, "every connected connector on "+path+"/"+transport, func(st localapi.Status) bool {
		last = st
		n := 0
		for _, c := range st.Connectors {
			if !c.Connected || c.State == "silent" {
				continue // silent: new flows do not use it; it moves or is dropped
			}
			if c.Path != path || (transport != "" && c.Transport != transport) {
				return false
			}
			n++
		}
		return n > 0
	})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// session is a long-running interactive SSH session to db from alice's
// laptop: every line sent comes back as "got <line>".
type session struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startSession(t *testing.T) *session {
	t.Helper()
	return startSessionOn(t, getLab(t))
}

// startSessionOn starts the session on a given lab (a test's own).
func startSessionOn(t *testing.T, l *lab.Lab) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd, err := l.Command(ctx, lab.NodeClient, sshArgs(lab.DBName, `echo ready; while read x; do echo "got $x"; done`)...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &session{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		rd := bufio.NewReader(stdout)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				close(s.lines)
				return
			}
			s.lines <- strings.TrimSpace(line)
		}
	}()
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	s.expect("ready", 20*time.Second)
	return s
}

// roundTrip sends line and waits for its echo.
func (s *session) roundTrip(line string, within time.Duration) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("ssh session: write: %v", err)
	}
	s.expect("got "+line, within)
}

// ended reports whether the session ends (ssh exits and its output closes)
// within the given time; a line printed meanwhile fails the test.
func (s *session) ended(within time.Duration) bool {
	s.t.Helper()
	select {
	case line, ok := <-s.lines:
		if ok {
			s.t.Fatalf("unexpected output from the ssh session: %q", line)
		}
		return true
	case <-time.After(within):
		return false
	}
}

func (s *session) expect(want string, within time.Duration) {
	s.t.Helper()
	select {
	case got, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("ssh session ended while waiting for %q", want)
		}
		if got != want {
			s.t.Fatalf("ssh session printed %q, want %q", got, want)
		}
	case <-time.After(within):
		s.t.Fatalf("ssh session did not print %q within %s", want, within)
	}
}
