package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/connector"
	"postern.dev/postern/controller"
	"postern.dev/postern/internal/testenv"
)

// restartController serves the lab's controller again, from the same data
// directory and on the same address, after stopCtl.
func (l *lab) restartController() {
	t := l.t
	t.Helper()
	ctl, err := controller.Open(l.ctlCfg)
	if err != nil {
		t.Fatalf("reopen controller: %v", err)
	}
	ln, err := net.Listen("tcp", l.ctlAddr)
	if err != nil {
		ctl.Close()
		t.Fatalf("listen again on %s: %v", l.ctlAddr, err)
	}
	sctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Serve(sctx, ln) }()
	l.ctl = ctl
	var once sync.Once
	l.stopCtl = func() { once.Do(func() { cancel(); <-done; ctl.Close() }) }
	t.Cleanup(l.stopCtl)
}

// socksEcho opens a flow through a daemon's SOCKS5 front-end.
func socksEcho(proxy *SOCKS5Frontend, port uint16) (net.Conn, error) {
	c, code, err := socksConnect(proxy, "127.0.0.1", port)
	if err != nil {
		return nil, err
	}
	if code != 0 || c == nil {
		return nil, fmt.Errorf("socks reply %d", code)
	}
	return c, nil
}

func echoOnce(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		return fmt.Errorf("echo %q: %v", b, err)
	}
	return nil
}

// TestControllerDownLongerThanTokenLifetime: with the controller stopped
// for three token lifetimes, running flows keep echoing and new flows open,
// also over a fresh connection dialed with the expired token (the connector
// fails static from its last policy, within its --fail-static-max). Once the
// controller is back, a device revoked then is cut off within about a second,
// and a device that is not keeps working (it refreshes its token).
func TestControllerDownLongerThanTokenLifetime(t *testing.T) {
	const ttl = 2 * time.Second
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLabWith(t, renderYAML(echoPort, 1), func(c *controller.Config) { c.TokenTTL = ttl })
	l.startConnectorWith("corp-a", nil, func(c *connector.Config) { c.FailStaticMax = time.Minute })
	dA, feA := l.newDaemon()
	dB, feB := l.newDaemon()
	l.login(dA, "alice@example.com", "alice-password-1")
	l.login(dB, "alice@example.com", "alice-password-1")
	waitConnectors(t, dA, 1)
	waitConnectors(t, dB, 1)
	proxyA, proxyB := feA, feB
	longA, err := socksEcho(proxyA, echoPort)
	if err != nil {
		t.Fatalf("device A: %v", err)
	}
	defer longA.Close()
	longB, err := socksEcho(proxyB, echoPort)
	if err != nil {
		t.Fatalf("device B: %v", err)
	}
	defer longB.Close()
	for _, c := range []net.Conn{longA, longB} {
		if err := echoOnce(c, "up"); err != nil {
			t.Fatal(err)
		}
	}

	l.stopCtl()
	down := time.Now()
	for i := 0; time.Since(down) < 3*ttl; i++ {
		for name, c := range map[string]net.Conn{"A": longA, "B": longB} {
			if err := echoOnce(c, fmt.Sprintf("down-%d", i)); err != nil {
				t.Fatalf("device %s: running flow %v into the outage (token lifetime %v): %v", name, time.Since(down).Round(100*time.Millisecond), ttl, err)
			}
		}
		c, err := socksEcho(proxyB, echoPort)
		if err == nil {
			err = echoOnce(c, "new")
			c.Close()
		}
		if err != nil {
			t.Fatalf("new flow %v into the outage: %v", time.Since(down).Round(100*time.Millisecond), err)
		}
		time.Sleep(200 * time.Millisecond) // pacing of the observation
	}

	// A fresh connection during the outage, dialed with the expired token.
	p := dB.currentPool()
	p.mu.Lock()
	for _, e := range p.entries {
		e.mu.Lock()
		if e.conn != nil {
			_ = e.conn.CloseWithError(quicErrShutdown, "test: force a fresh dial")
		}
		e.mu.Unlock()
	}
	p.mu.Unlock()
	var fresh net.Conn
	testenv.Eventually(t, 10*time.Second, "a new flow over a fresh connection during the outage", func() bool {
		c, err := socksEcho(proxyB, echoPort)
		if err != nil {
			return false
		}
		if echoOnce(c, "fresh") != nil {
			c.Close()
			return false
		}
		fresh = c
		return true
	})
	defer fresh.Close()

	// The controller comes back and device A is revoked at once.
	l.restartController()
	if err := l.ctl.RevokeDevice(l.ctx, "test", dA.Status().DeviceID); err != nil {
		t.Fatalf("revoke device A: %v", err)
	}
	revoked := time.Now()
	_ = longA.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := longA.Read(make([]byte, 1)); err == nil {
		t.Fatal("device A's flow still delivers data after its revocation")
	}
	el := time.Since(revoked)
	t.Logf("revocation applied %v after the controller came back", el.Round(time.Millisecond))
	if el > 1500*time.Millisecond {
		t.Errorf("revocation took %v once the controller was back, want about 1 s", el)
	}

	// Device B refreshes its tokens and keeps working past the grace the
	// connector gives connections on expired tokens.
	testenv.Eventually(t, 20*time.Second, "device B holds a fresh token", func() bool {
		for _, c := range dB.Status().Connectors {
			if c.Connected && time.Until(c.TokenExpiry) > 0 {
				return true
			}
		}
		return false
	})
	if err := echoOnce(fresh, "after"); err != nil {
		t.Errorf("device B after the controller came back: %v", err)
	}
}
