package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/connector"
	"postern.dev/postern/controller"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// lab is an in-process controller with connectors (real QUIC on loopback).
type lab struct {
	t       testing.TB
	ctx     context.Context
	ctl     *controller.Controller
	url     string
	ca      string
	conn    map[string]*runningConnector
	stopCtl func()
	ctlCfg  controller.Config // for restartController
	ctlAddr string
}

type runningConnector struct {
	c    *connector.Connector
	stop func()
	dir  string // state directory (identity), for a restart
}

// staticResolver answers names from a map (the connector's private DNS).
type staticResolver map[string]string

func (r staticResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	ip, ok := r[strings.TrimSuffix(strings.ToLower(host), ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(ip)}, nil
}

func newLab(t testing.TB, yaml string) *lab { return newLabWith(t, yaml, nil) }

func newLabWith(t testing.TB, yaml string, tune func(*controller.Config)) *lab {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, ctx: ctx, url: "https://" + ln.Addr().String(), conn: map[string]*runningConnector{}}
	cfg := controller.Config{DataDir: t.TempDir(), PublicURL: l.url, Logger: testenv.Logger(t), HeartbeatInterval: time.Second}
	if tune != nil {
		tune(&cfg)
	}
	ctl, err := controller.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.ctl = ctl
	l.ctlCfg, l.ctlAddr = cfg, ln.Addr().String()
	l.ca = string(ctl.CACertPEM())
	sctx, scancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Serve(sctx, ln) }()
	var once sync.Once
	l.stopCtl = func() { once.Do(func() { scancel(); <-done; ctl.Close() }) }
	t.Cleanup(l.stopCtl)
	if _, err := ctl.ApplyYAML(ctx, []byte(yaml), false); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return l
}

// startConnector enrolls and runs connector name.
func (l *lab) startConnector(name string, res staticResolver) *runningConnector {
	return l.startConnectorWith(name, res, nil)
}

// startConnectorWith is startConnector with a hook on the connector's config.
func (l *lab) startConnectorWith(name string, res staticResolver, tune func(*connector.Config)) *runningConnector {
	t := l.t
	t.Helper()
	dir := t.TempDir()
	tok, err := l.ctl.EnrollmentToken("connector", name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connector.Enroll(l.ctx, dir, tok, connector.EnrollOptions{}); err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	cfg := connector.Config{StateDir: dir, ListenUDP: "127.0.0.1:0", Logger: testenv.Logger(t), Resolver: res}
	if tune != nil {
		tune(&cfg)
	}
	c, err := connector.Open(cfg)
	if err != nil {
		t.Fatalf("open connector: %v", err)
	}
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	rc := &runningConnector{c: c, stop: func() { once.Do(func() { cancel(); <-done }) }, dir: dir}
	t.Cleanup(rc.stop)
	l.conn[name] = rc
	testenv.Eventually(t, 10*time.Second, "connector "+name+" ready", c.Ready)
	return rc
}

// newDaemon starts a client daemon in SOCKS5 mode on a free port.
func (l *lab) newDaemon() (*Daemon, *SOCKS5Frontend) {
	l.t.Helper()
	fe := NewSOCKS5Frontend("127.0.0.1:0")
	return newTestDaemon(l.t, fe), fe
}

// newTestDaemon makes a client daemon with front-end fe, a state directory
// of the test's own and the test's logger, closed when the test ends.
func newTestDaemon(t testing.TB, fe Frontend) *Daemon {
	t.Helper()
	d, err := New(Config{StateDir: t.TempDir(), Logger: testenv.Logger(t), NewFrontend: func() (Frontend, error) { return fe, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// aliceOnline starts a daemon, logs alice in and waits until her policy
// lists n online connectors.
func (l *lab) aliceOnline(n int) (*Daemon, *SOCKS5Frontend) {
	l.t.Helper()
	d, fe := l.newDaemon()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(l.t, d, n)
	return d, fe
}

func (l *lab) login(d *Daemon, email, password string) localapi.Status {
	l.t.Helper()
	st, err := d.Login(l.ctx, localapi.LoginRequest{ControllerURL: l.url, CAPEM: l.ca, Email: email, Password: password})
	if err != nil {
		l.t.Fatalf("login: %v", err)
	}
	return st
}

// waitConnectors waits until the daemon's policy lists n online connectors.
func waitConnectors(t testing.TB, d *Daemon, n int) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, fmt.Sprintf("%d online connectors in policy", n), func() bool {
		tb := d.table.Load()
		k := 0
		for _, cs := range tb.connectors {
			for _, c := range cs {
				if c.Online && len(c.Addrs) > 0 {
					k++
				}
			}
		}
		return k >= n
	})
}

// socksConnect is a minimal SOCKS5 client: it signs in with the front-end's
// credentials (RFC 1929) and sends CONNECT host:port, returning the reply
// code and, on success, the connection.
func socksConnect(fe *SOCKS5Frontend, host string, port uint16) (net.Conn, byte, error) {
	addr := fe.ListenAddr()
	if addr == nil {
		return nil, 0, errors.New("SOCKS5 front-end not started")
	}
	user, pass := fe.Credentials()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	auth := append([]byte{5, 1, 2, 1, byte(len(user))}, user...)
	auth = append(append(auth, byte(len(pass))), pass...)
	if _, err := c.Write(auth); err != nil {
		c.Close()
		return nil, 0, err
	}
	var m [4]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [4]byte{5, 2, 1, 0} {
		c.Close()
		return nil, 0, fmt.Errorf("SOCKS5 sign-in: %v %v", m, err)
	}
	req := []byte{5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, 0, err
	}
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("read reply: %w", err)
	}
	if rep[1] != 0 {
		c.Close()
		return nil, rep[1], nil
	}
	_ = c.SetDeadline(time.Time{})
	return c, 0, nil
}

// hostIP is a non-loopback IPv4 address of this machine (names never
// resolve to loopback through a connector).
func hostIP(t testing.TB) string {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr().String()
		}
	}
	t.Skip("no non-loopback IPv4 address for name-resource tests")
	return ""
}

var errShort = errors.New("short echo")

// checkNoLeaks fails if goroutines of the client packages outlive Close.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	if err := testenv.WaitNoGoroutines(5*time.Second, func(g string) bool {
		return !strings.Contains(g, "_test.go") &&
			(strings.Contains(g, "postern/client.") || strings.Contains(g, "postern/client/socks5.") || strings.Contains(g, "postern/netstack."))
	}); err != nil {
		t.Fatalf("client goroutines still running after Close: %v", err)
	}
}
