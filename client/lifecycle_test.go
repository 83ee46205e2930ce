package client

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/client/session"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// TestTokenRefreshInBand: tokens are refreshed on the control stream of the
// same connection before they expire, so the connection and a long-lived
// flow outlive the token they started with.
//
// Timing: the connector closes a connection the instant its token expires,
// and the controller truncates expiries to the second, so a token lives
// between refreshTestTTL-1s and refreshTestTTL. The client refreshes once a
// third of the remaining life has passed (pool.refresh), leaving at least
// 3.3 s for a controller round trip and one frame on the control stream:
// ample under -race on a loaded machine. (The former 2 s TTL left tokens as
// little as 1 s of life, and the 1 s floor of the refresh wait raced the
// connector's expiry timer.)
func TestTokenRefreshInBand(t *testing.T) {
	const refreshTestTTL = 6 * time.Second
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLabWith(t, renderYAML(echoPort, 1), func(c *controller.Config) { c.TokenTTL = refreshTestTTL })
	l.startConnector("corp-a", nil)
	d, fe := l.aliceOnline(1)
	c, code, err := socksConnect(fe, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("connect: %d %v", code, err)
	}
	defer c.Close()
	conns := liveConns(d)
	if len(conns) != 1 {
		t.Fatalf("%d connections after the first flow, want 1", len(conns))
	}
	first := d.Status().Connectors[0]
	// Two refreshes (each one moves the expiry: refreshes are more than a
	// second apart), and the first token is past its expiry.
	seen := map[time.Time]bool{first.TokenExpiry: true}
	testenv.Eventually(t, 4*refreshTestTTL, "two token refreshes and the first token expired", func() bool {
		seen[d.Status().Connectors[0].TokenExpiry] = true
		return len(seen) >= 3 && time.Now().After(first.TokenExpiry.Add(500*time.Millisecond))
	})
	cs := d.Status().Connectors[0]
	if now := liveConns(d); !cs.Connected || len(now) != 1 || now[first.ID] != conns[first.ID] {
		t.Errorf("the connection was replaced during the refreshes: %+v", cs)
	}
	if conn := conns[first.ID]; conn.Context().Err() != nil {
		t.Errorf("the first connection closed: %v", context.Cause(conn.Context()))
	}
	_, _ = c.Write([]byte("still here"))
	b := make([]byte, 10)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "still here" {
		t.Fatalf("long-lived flow after refresh: %q %v", b, err)
	}
}

// liveConns returns the daemon's open QUIC connections by connector ID.
func liveConns(d *Daemon) map[string]*quic.Conn {
	out := map[string]*quic.Conn{}
	p := d.currentPool()
	if p == nil {
		return out
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, e := range p.entries {
		e.mu.Lock()
		if e.conn != nil {
			out[id] = e.conn
		}
		e.mu.Unlock()
	}
	return out
}

// TestFailStatic: with the controller gone, running flows and the open
// connection keep working, and status says since when it is unreachable.
func TestFailStatic(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnector("corp-a", nil)
	d, fe := l.aliceOnline(1)
	proxy := fe
	c, code, err := socksConnect(proxy, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("connect: %d %v", code, err)
	}
	defer c.Close()

	before := time.Now()
	l.stopCtl()
	testenv.Eventually(t, 10*time.Second, "controller unreachable in status", func() bool {
		return !d.Status().ControllerReachable
	})
	st := d.Status()
	if st.State != localapi.StateDegraded || st.ControllerDownSince.Before(before.Add(-time.Second)) || st.Message == "" {
		t.Errorf("status with controller down: state %s since %v message %q", st.State, st.ControllerDownSince, st.Message)
	}
	// The running flow.
	_, _ = c.Write([]byte("ping"))
	b := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("running flow after controller loss: %v", err)
	}
	// A new flow on the open connection (its token is still valid).
	c2, code, err := socksConnect(proxy, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("new flow after controller loss: %d %v", code, err)
	}
	c2.Close()
	// The policy survives on disk for a restart.
	var p controlapi.ClientPolicy
	if ok, err := d.state.ReadJSON(session.PolicyFile, &p); err != nil || !ok || len(p.Resources) != 2 {
		t.Errorf("saved policy: %v %v", p, err)
	}
}

// TestCloseLeavesNothing: after Close no goroutine of the client remains.
func TestCloseLeavesNothing(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnector("corp-a", nil)
	d, fe := l.aliceOnline(1)
	c, code, err := socksConnect(fe, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("connect: %d %v", code, err)
	}
	ch, _ := d.Events()
	d.Close()
	c.Close()
	for range ch {
	}
	checkNoLeaks(t)
}

// TestRestartResumesSession: the device key, session and last policy survive
// a daemon restart; the key file is private.
func TestRestartResumesSession(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnector("corp-a", nil)
	dir := t.TempDir()
	mk := func() (*Daemon, *SOCKS5Frontend) {
		fe := NewSOCKS5Frontend("127.0.0.1:0")
		d, err := New(Config{StateDir: dir, Logger: testenv.Logger(t), NewFrontend: func() (Frontend, error) { return fe, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return d, fe
	}
	d, _ := mk()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	jkt := d.sm.KeyThumbprint()
	d.Close()
	fi, err := os.Stat(filepath.Join(dir, session.DeviceKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device key mode: %v %v", fi.Mode(), err)
	}

	// Restart with the controller down: signed in, resources from disk.
	l.stopCtl()
	d2, fe2 := mk()
	defer d2.Close()
	if err := d2.Start(); err != nil {
		t.Fatal(err)
	}
	if d2.sm.KeyThumbprint() != jkt {
		t.Error("device key changed across restart")
	}
	st := d2.Status()
	if st.Principal == nil || st.Principal.Name != "alice@example.com" || st.State == localapi.StateStopped {
		t.Fatalf("status after restart: %+v", st)
	}
	if rs := d2.Resources(); len(rs) != 2 {
		t.Errorf("resources after restart: %+v", rs)
	}
	// Nothing new is granted without the controller: no token, no flow.
	_, code, _ := socksConnect(fe2, "127.0.0.1", echoPort)
	if code == 0 {
		t.Error("a flow opened without a controller to issue tokens")
	}
	testenv.Eventually(t, 5*time.Second, "unreachable", func() bool { return !d2.Status().ControllerReachable })
}
