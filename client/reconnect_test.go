package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/connector"
	"postern.dev/postern/controller"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// restartConnector runs a stopped connector again from its state directory
// (same identity, a new UDP port the controller learns from its heartbeat).
func (l *lab) restartConnector(name string, old *runningConnector) *runningConnector {
	t := l.t
	t.Helper()
	c, err := connector.Open(connector.Config{StateDir: old.dir, ListenUDP: "127.0.0.1:0", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatalf("reopen connector %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	rc := &runningConnector{c: c, stop: func() { once.Do(func() { cancel(); <-done }) }, dir: old.dir}
	t.Cleanup(rc.stop)
	l.conn[name] = rc
	testenv.Eventually(t, 10*time.Second, "restarted connector ready", c.Ready)
	return rc
}

// waitStatus waits for a status change until cond holds, failing with the
// last status after limit.
func waitStatus(t *testing.T, d *Daemon, limit time.Duration, what string, cond func(localapi.Status) bool) localapi.Status {
	t.Helper()
	ch, cancel := d.Events()
	defer cancel()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	// Counters (RTT, since) are not events: look at least every 200 ms.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st := d.Status()
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; last status: state %s, message %q, connectors %+v", limit, what, st.State, st.Message, st.Connectors)
		}
	}
}

func connectorNamed(st localapi.Status, name string) (localapi.ConnectorStatus, bool) {
	for _, c := range st.Connectors {
		if c.Name == name {
			return c, true
		}
	}
	return localapi.ConnectorStatus{}, false
}

// TestLostConnectorRedialedInBackground: when the only connector goes away,
// status says it is reconnecting (since when, last error) and the daemon is
// degraded, not connected; when it comes back, the daemon reconnects without
// waiting for a flow, and the next flow goes through at the first try.
func TestLostConnectorRedialedInBackground(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	a := l.startConnector("corp-a", nil)
	var logBuf testenv.SyncBuffer
	fe := NewSOCKS5Frontend("127.0.0.1:0")
	d, err := New(Config{StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logBuf, nil)),
		NewFrontend: func() (Frontend, error) { return fe, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	echo := func() error {
		c, err := socksEcho(fe, echoPort)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || !bytes.Equal(b, []byte("ping")) {
			return fmt.Errorf("echo %q: %v", b, err)
		}
		return nil
	}
	if err := echo(); err != nil {
		t.Fatalf("first flow: %v", err)
	}
	if c, ok := connectorNamed(d.Status(), "corp-a"); !ok || c.State != ConnStateConnected || c.Since.IsZero() {
		t.Fatalf("connector after the first flow: %+v", c)
	}

	a.stop()
	st := waitStatus(t, d, 20*time.Second, "corp-a reconnecting", func(st localapi.Status) bool {
		c, ok := connectorNamed(st, "corp-a")
		return ok && c.State == ConnStateReconnecting && c.LastError != ""
	})
	c, _ := connectorNamed(st, "corp-a")
	if st.State != localapi.StateDegraded || !strings.Contains(st.Message, "no connector reachable") || !strings.Contains(st.Message, "corp-a reconnecting since") {
		t.Errorf("status while no connector is reachable: state %s, message %q", st.State, st.Message)
	}
	if c.Connected || c.Since.IsZero() || c.Path != "" {
		t.Errorf("reconnecting connector: %+v", c)
	}

	// A flow now is refused, and says why at the default level, once.
	logBuf.Reset()
	for i := 0; i < 3; i++ {
		if err := echo(); err == nil {
			t.Fatal("a flow succeeded with the only connector down")
		}
	}
	if n := strings.Count(logBuf.String(), "flow refused: no path to a connector"); n != 1 {
		t.Errorf("%d WARN lines for 3 refused flows, want 1 (rate-limited):\n%s", n, logBuf.String())
	}
	if !strings.Contains(logBuf.String(), "level=WARN") || !strings.Contains(logBuf.String(), "connectors=corp-a") || !strings.Contains(logBuf.String(), "paths_tried=") {
		t.Errorf("refusal line lacks level, connector or paths:\n%s", logBuf.String())
	}

	l.restartConnector("corp-a", a)
	// No flow asks for it: the background redial must bring it back.
	waitStatus(t, d, 20*time.Second, "corp-a connected again without a flow", func(st localapi.Status) bool {
		c, ok := connectorNamed(st, "corp-a")
		return ok && c.State == ConnStateConnected && st.State == localapi.StateConnected
	})
	start := time.Now()
	if err := echo(); err != nil {
		t.Fatalf("flow after the connector came back: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("first flow after the redial took %v", el)
	}
}

func TestJitterAndPathsTried(t *testing.T) {
	for _, d := range []time.Duration{reconnectMin, time.Second, reconnectMax} {
		for i := 0; i < 100; i++ {
			if j := jitter(d); j < d/2 || j > d {
				t.Fatalf("jitter(%v) = %v", d, j)
			}
		}
	}
	e1 := errors.New("dial connector x: via relay relay-1: context deadline exceeded")
	e2 := errors.New("direct 192.0.2.1:4433: no answer")
	got := pathsTried(&FlowError{Err: errors.Join(e1, errors.Join(e2, e1))})
	if len(got) != 2 || got[0] != e1.Error() || got[1] != e2.Error() {
		t.Errorf("pathsTried = %q", got)
	}
}

// TestLongFlowOutlivesCertificateRotation: a flow opened before the
// connector rotates its certificate keeps echoing for well past a token
// lifetime (4 s here): the client keeps refreshing the draining connection's
// token until its flows end (make-before-break), while new flows use a new
// connection to the new certificate.
func TestLongFlowOutlivesCertificateRotation(t *testing.T) {
	const ttl = 4 * time.Second
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLabWith(t, renderYAML(echoPort, 1), func(c *controller.Config) { c.TokenTTL = ttl })
	a := l.startConnector("corp-a", nil)
	d, fe := l.aliceOnline(1)
	open := func() (net.Conn, error) { return socksEcho(fe, echoPort) }
	long, err := open()
	if err != nil {
		t.Fatalf("open the long flow: %v", err)
	}
	defer long.Close()
	if err := echoOnce(long, "before"); err != nil {
		t.Fatal(err)
	}
	oldDigest := a.c.CertDigests()[0]
	if err := a.c.Rotate(l.ctx); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	rotated := time.Now()
	if a.c.CertDigests()[0] == oldDigest {
		t.Fatal("rotation kept the certificate")
	}
	// Observe for three token lifetimes: the long flow must keep echoing,
	// and new flows must work too.
	for i := 0; time.Since(rotated) < 3*ttl; i++ {
		if err := echoOnce(long, fmt.Sprintf("after-%d", i)); err != nil {
			t.Fatalf("long flow %v after the rotation (token lifetime %v): %v", time.Since(rotated).Round(100*time.Millisecond), ttl, err)
		}
		c, err := open()
		if err != nil {
			t.Fatalf("new flow %v after the rotation: %v", time.Since(rotated).Round(100*time.Millisecond), err)
		}
		err = echoOnce(c, "new")
		c.Close()
		if err != nil {
			t.Fatalf("new flow %v after the rotation: %v", time.Since(rotated).Round(100*time.Millisecond), err)
		}
		time.Sleep(250 * time.Millisecond) // pacing of the observation, not a wait for an event
	}
	if st := d.Status(); st.State != localapi.StateConnected {
		t.Errorf("status after rotation: %s %q", st.State, st.Message)
	}
}

// TestStatusNoConnectorOnline: signed in while the only connector is
// offline, before any flow, status is degraded and says so (never a bare
// connected).
func TestStatusNoConnectorOnline(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	a := l.startConnector("corp-a", nil)
	a.stop()
	d, _ := l.newDaemon()
	l.login(d, "alice@example.com", "alice-password-1")
	st := waitStatus(t, d, 30*time.Second, "the controller to report corp-a offline", func(st localapi.Status) bool {
		return st.State == localapi.StateDegraded
	})
	if !strings.HasPrefix(st.Message, "no connector online: the controller reports ") || !strings.Contains(st.Message, "corp-a") {
		t.Errorf("message %q", st.Message)
	}
}

// TestRefusalLogPerKey: each kind of refusal and each key gets its own
// line once per interval, and the next line counts those held back.
func TestRefusalLogPerKey(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var r refusalLog
	for i := 0; i < 5; i++ {
		r.warnLimit(log, "corp", "db", "this device has 4 flows open at this connector, its limit")
		r.warn(log, "corp", "db", nil, errors.New("no answer"))
	}
	r.warnLimit(log, "lab", "db", "limit")
	if n := strings.Count(buf.String(), "too many flows open at the connector"); n != 2 {
		t.Fatalf("%d limit lines for 5 refusals in corp and 1 in lab, want 2:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "no path to a connector"); n != 1 {
		t.Fatalf("%d no-path lines for 5 refusals, want 1", n)
	}
	r.mu.Lock()
	r.last["limit corp"] = time.Now().Add(-refusalLogEvery)
	r.mu.Unlock()
	buf.Reset()
	r.warnLimit(log, "corp", "db", "limit")
	if !strings.Contains(buf.String(), "similar_refusals_since_last=4") {
		t.Fatalf("next line after the interval does not count the 4 held back: %s", buf.String())
	}
}
