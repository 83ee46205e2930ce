//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
	"postern.dev/postern/localapi"
)

// Issue 13, "done when": an SSH session opened before each of these events
// keeps answering afterwards, and new connections work. (Client address
// change and relay restart are TestRoamingKeepsSession and
// TestRelayRestartDuringRelayedSession.)

// UDP dies under a running direct connection: the connection moves onto
// the relay over TLS with its streams.
func TestSessionSurvivesUDPBlocked(t *testing.T) {
	l := workingLab(t)
	if !l.ReachableConnectors() {
		waitPaths(t, 30*time.Second, "direct", "udp")
	}
	s := startSession(t)
	s.roundTrip("before", 5*time.Second)
	if err := l.BlockUDP(context.Background(), lab.RouterHome, true); err != nil {
		t.Fatal(err)
	}
	blocked := time.Now()
	t.Cleanup(func() {
		if err := l.BlockUDP(context.Background(), lab.RouterHome, false); err != nil {
			t.Errorf("unblock UDP: %v", err)
		}
		assertAccessWorks(t, 30*time.Second)
	})
	s.roundTrip("after-udp-blocked", 20*time.Second)
	t.Logf("the session answered %s after UDP was blocked", time.Since(blocked).Round(time.Millisecond))
	assertAccessWorks(t, 10*time.Second)
	s.roundTrip("still-there", 5*time.Second)
}

// Both connectors rotate their QUIC certificates (SIGHUP): the running
// session keeps answering (make-before-break) and new sessions work.
func TestSessionSurvivesCertificateRotation(t *testing.T) {
	l := workingLab(t)
	s := startSession(t)
	s.roundTrip("before", 5*time.Second)
	progs := []string{lab.ProgConnectorA, lab.ProgConnectorB}
	before := map[string]int{}
	for _, p := range progs {
		before[p] = logCount(t, p, "rotated QUIC certificate")
		if err := l.Signal(p, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range progs {
		testenv.Poll(t, 10*time.Second, p+" rotated its certificate", func() error {
			if n := logCount(t, p, "rotated QUIC certificate"); n <= before[p] {
				return fmt.Errorf("%d rotations logged, want > %d", n, before[p])
			}
			return nil
		})
	}
	rotated := time.Now()
	s.roundTrip("after-rotation", 5*time.Second)
	assertAccessWorks(t, 10*time.Second)
	t.Logf("the session and a new ssh answered %s after the rotation", time.Since(rotated).Round(time.Millisecond))
	s.roundTrip("still-there", 5*time.Second)
}

// The client is suspended for 60 s (posternd stopped with SIGSTOP, as a
// closed laptop lid): after SIGCONT the running session and new flows answer
// within 3 s.
func TestSessionSurvivesClientSuspend(t *testing.T) {
	l := workingLab(t)
	s := startSession(t)
	s.roundTrip("before", 5*time.Second)
	if err := l.Signal(lab.ProgDaemon, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = l.Signal(lab.ProgDaemon, syscall.SIGCONT)
		}
	})
	time.Sleep(60 * time.Second) // the suspension itself is what is tested
	if err := l.Signal(lab.ProgDaemon, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	at := time.Now()
	s.roundTrip("after-resume", 3*time.Second)
	r := run(t, lab.NodeClient, 3*time.Second, nil, sshArgs("-o", "ConnectTimeout=3", lab.DBName, "hostname")...)
	if r.err != nil {
		t.Fatalf("new ssh within 3 s of resuming: %v\n%s", r.err, r.out)
	}
	t.Logf("session and a new ssh answered %s after SIGCONT", time.Since(at).Round(time.Millisecond))
}

// The controller is down for twice the Connection Token lifetime: the
// running session and new flows keep working (fail static at the connector,
// bounded by --fail-static-max), and once the controller is back a
// revocation ends the session within seconds. A lab of its own, because the
// token lifetime is the controller's setting.
func TestSessionSurvivesLongControllerOutage(t *testing.T) {
	const ttl = 15 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{BinDir: binDir(), Postern: true, TokenTTL: ttl, Progress: os.Stderr,
		ReachableConnectors: lab.DefaultReachableConnectors})
	if err != nil {
		t.Fatalf("start a lab with %s tokens: %v", ttl, err)
	}
	failed := true
	defer func() {
		if err := l.Close(failed || t.Failed()); err != nil {
			t.Errorf("close the lab: %v", err)
		}
	}()
	sshIn := func(timeout time.Duration) error {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := l.Exec(c, lab.NodeClient, sshArgs("-o", "ConnectTimeout=8", lab.DBName, "hostname")...)
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	if err := sshIn(20 * time.Second); err != nil {
		t.Fatalf("ssh before the outage: %v", err)
	}
	s := startSessionOn(t, l)
	s.roundTrip("before", 5*time.Second)
	if err := l.Stop(lab.ProgController); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	for time.Since(stopped) < 2*ttl+5*time.Second {
		s.roundTrip(fmt.Sprintf("down-%ds", int(time.Since(stopped).Seconds())), 5*time.Second)
		time.Sleep(5 * time.Second) // a user typing now and then
	}
	if err := sshIn(15 * time.Second); err != nil {
		t.Fatalf("new ssh %s into the controller outage (tokens of %s): %v", time.Since(stopped).Round(time.Second), ttl, err)
	}
	t.Logf("session and new ssh still work %s into the outage", time.Since(stopped).Round(time.Second))
	if err := l.StartProgram(lab.ProgController); err != nil {
		t.Fatal(err)
	}
	p, _ := l.Proc(lab.ProgController)
	if err := l.WaitController(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitStatus(ctx, lab.NodeClient, 60*time.Second, "controller reachable again", func(st localapi.Status) bool {
		return st.ControllerReachable
	}); err != nil {
		t.Fatal(err)
	}
	s.roundTrip("controller-back", 5*time.Second)
	failed = false
}

// logCount counts the lines of a lab program's log that contain substr.
func logCount(t *testing.T, prog, substr string) int {
	t.Helper()
	p, err := getLab(t).Proc(prog)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatalf("read %s: %v", p.LogPath, err)
	}
	return strings.Count(string(b), substr)
}
