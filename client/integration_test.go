package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client/socks5"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

var integrationYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a", "corp-b") + `resources:
  - name: echo
    address: 127.0.0.1
    network: corp
    ports: [tcp/ECHOPORT]
    groups: [engineering]
  - name: app
    address: "*.corp.internal"
    network: corp
    ports: [tcp/NAMEPORT]
    groups: [engineering]
`

func renderYAML(echo, name uint16) string {
	s := strings.ReplaceAll(integrationYAML, "ECHOPORT", itoa(int(echo)))
	return strings.ReplaceAll(s, "NAMEPORT", itoa(int(name)))
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestSOCKS5ThroughConnector proves a TCP flow reaches a local TCP server
// through the client core, real QUIC and a real connector, by IP and by name,
// that a port outside the policy is refused at once, and that status shows
// the connector with its path and RTT.
func TestSOCKS5ThroughConnector(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	hip := hostIP(t)
	_, namePort := testenv.EchoTCP(t, hip+":0")
	l := newLab(t, renderYAML(echoPort, namePort))
	l.startConnector("corp-a", staticResolver{"app.corp.internal": hip})

	d, fe := l.newDaemon()
	st := l.login(d, "alice@example.com", "alice-password-1")
	if st.Principal == nil || st.Principal.Name != "alice@example.com" {
		t.Fatalf("principal after login: %+v", st.Principal)
	}
	waitConnectors(t, d, 1)
	proxy := fe

	// By IP: 1 MiB round trip with half-close.
	c, code, err := socksConnect(proxy, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("socks connect by IP: code %d err %v", code, err)
	}
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo by IP: %d bytes, err %v", len(got), err)
	}

	// By name (curl --socks5-hostname passes names).
	c, code, err = socksConnect(proxy, "app.corp.internal", namePort)
	if err != nil || code != 0 {
		t.Fatalf("socks connect by name: code %d err %v", code, err)
	}
	_, _ = c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo by name: %q %v", buf, err)
	}
	c.Close()

	// A port outside the policy: refused without a round trip.
	start := time.Now()
	_, code, err = socksConnect(proxy, "127.0.0.1", echoPort+1)
	if err != nil || code != socks5.ReplyNotAllowed {
		t.Fatalf("port outside policy: code %d err %v, want %d", code, err, socks5.ReplyNotAllowed)
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("refusal took %v", el)
	}
	// A name that is no resource.
	_, code, _ = socksConnect(proxy, "example.org", 80)
	if code != socks5.ReplyNotAllowed {
		t.Errorf("non-resource name: code %d", code)
	}

	st = d.Status()
	if st.State != localapi.StateConnected || len(st.Connectors) != 1 {
		t.Fatalf("status: %+v", st)
	}
	cs := st.Connectors[0]
	if cs.Path != "direct" || !cs.Connected || cs.RTTMillis <= 0 || cs.TotalFlows < 2 {
		t.Errorf("connector status: %+v", cs)
	}
	if st.BytesUp < 1<<20 || st.BytesDown < 1<<20 {
		t.Errorf("bytes: up %d down %d", st.BytesUp, st.BytesDown)
	}
	if st.SOCKS5 == "" {
		t.Errorf("status lacks the SOCKS5 address")
	}
}

// TestFailover: with the connector serving the flows killed and a second
// one available, a new connection succeeds within 5 s (issue 4's test bound).
//
// The product goal is 2 s: suspectAfter (1.2 s of silence) plus at most one
// monitor tick, one openFlow tick and a cold dial of the other connector
// (token from the controller, QUIC handshake, token on the control stream).
// Those last steps take 100-300 ms on an idle machine but well over 0.8 s
// under -race with every package's tests running at once on two cores, so
// the 2 s figure is measured by BenchmarkFailover, not asserted here.
func TestFailover(t *testing.T) {
	el, err := measureFailover(t, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new flow succeeded %v after the kill", el)
}

// BenchmarkFailover measures the time from killing the connector that
// serves the flows to the first new flow through the other connector of the
// network (each iteration on a fresh controller, two connectors and a
// daemon). Goal (issue 4): at most 2 s.
func BenchmarkFailover(b *testing.B) {
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		el, err := measureFailover(b, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		total += el
		worst = max(worst, el)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/failover")
	b.ReportMetric(float64(worst.Milliseconds()), "max-ms")
}

// measureFailover sets up a network with two connectors, opens a flow, kills
// the connector that served it abruptly (its socket closes: no
// CONNECTION_CLOSE reaches the client) and returns how long until a new
// flow succeeds, trying for at most limit. Everything it started is stopped
// when it returns.
func measureFailover(tb testing.TB, limit time.Duration) (time.Duration, error) {
	tb.Helper()
	_, echoPort := testenv.EchoTCP(tb, "127.0.0.1:0")
	l := newLab(tb, renderYAML(echoPort, 1))
	defer l.stopCtl()
	a := l.startConnector("corp-a", nil)
	defer a.stop()
	b := l.startConnector("corp-b", nil)
	defer b.stop()
	d, fe := l.newDaemon()
	defer d.Close()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(tb, d, 2)
	proxy := fe

	roundTrip := func() error {
		c, code, err := socksConnect(proxy, "127.0.0.1", echoPort)
		if err != nil {
			return err
		}
		if code != 0 {
			return &FlowError{Msg: "socks reply " + itoa(int(code))}
		}
		defer c.Close()
		_, _ = c.Write([]byte("ping"))
		b := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if !bytes.Equal(b, []byte("ping")) {
			return errShort
		}
		return nil
	}
	if err := roundTrip(); err != nil {
		return 0, fmt.Errorf("first flow: %w", err)
	}
	// Find which connector served it and kill that one.
	var used string
	for _, c := range d.Status().Connectors {
		if c.Connected {
			used = c.Name
		}
	}
	victim := a
	if used == "corp-b" {
		victim = b
	}
	victim.c.Transport().Conn.Close() // the socket under the transport, GRO-wrapped or not
	killed := time.Now()
	var err error
	for time.Since(killed) < limit {
		if err = roundTrip(); err == nil {
			el := time.Since(killed)
			if el > limit {
				return el, fmt.Errorf("the first new flow after killing %s succeeded only after %v (limit %v)", used, el, limit)
			}
			return el, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("no flow succeeded within %v after killing %s: %w", limit, used, err)
}

// TestLocalAPIAndCLIContract drives the local API client over the real socket.
func TestLocalAPI(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnector("corp-a", nil)
	d, _ := l.newDaemon()
	lc := serveLocalAPI(t, d)
	ctx := context.Background()

	st, err := lc.Status(ctx)
	if err != nil || st.State != localapi.StateSignedOut {
		t.Fatalf("status before login: %+v %v", st, err)
	}
	if _, err := lc.Up(ctx); err == nil {
		t.Fatal("up while signed out succeeded")
	} else if ae, ok := err.(*localapi.APIError); !ok || !strings.Contains(ae.Err.Hint, "postern login") {
		t.Errorf("up while signed out: %v", err)
	}
	// Wrong password: a clear error, no session.
	_, err = lc.Login(ctx, localapi.LoginRequest{ControllerURL: l.url, CAPEM: l.ca, Email: "alice@example.com", Password: "wrong-password-1"})
	if err == nil {
		t.Fatal("login with wrong password succeeded")
	}
	// Wrong CA: a certificate error with a hint about --ca.
	_, err = lc.Login(ctx, localapi.LoginRequest{ControllerURL: l.url, Email: "alice@example.com", Password: "alice-password-1"})
	if ae, ok := err.(*localapi.APIError); !ok || !strings.Contains(ae.Err.Hint, "--ca") {
		t.Errorf("login without CA: %v", err)
	}

	events := make(chan localapi.Status, 64)
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	go lc.Events(ectx, func(s localapi.Status) bool { events <- s; return true })

	st, err = lc.Login(ctx, localapi.LoginRequest{ControllerURL: l.url, CAPEM: l.ca, Email: "alice@example.com", Password: "alice-password-1"})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "connected event", func() bool {
		for {
			select {
			case s := <-events:
				if s.State == localapi.StateConnected {
					return true
				}
			default:
				return false
			}
		}
	})
	rs, err := lc.Resources(ctx)
	if err != nil || len(rs) != 2 {
		t.Fatalf("resources: %+v %v", rs, err)
	}
	ex, err := lc.DNS(ctx, "db.corp.internal")
	if err != nil || ex.Resource != "app" {
		t.Errorf("dns explain: %+v %v", ex, err)
	}
	if st, err = lc.Down(ctx); err != nil || st.State != localapi.StateStopped {
		t.Errorf("down: %+v %v", st.State, err)
	}
	if st, err = lc.Up(ctx); err != nil || st.State == localapi.StateStopped {
		t.Errorf("up: %+v %v", st.State, err)
	}
	if st, err = lc.Logout(ctx); err != nil || st.State != localapi.StateSignedOut {
		t.Errorf("logout: %+v %v", st.State, err)
	}
}

// serveLocalAPI serves d's local API on a socket in a temporary directory
// until the test ends and returns a client of it.
func serveLocalAPI(t *testing.T, d *Daemon) *localapi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), localapi.SocketName)
	srv, err := ListenLocalAPI(d, sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	lc := localapi.NewClient(sock)
	t.Cleanup(lc.Close)
	return lc
}
