package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/connector"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

// countingDialer is a DirectDialer that counts its dials.
type countingDialer struct {
	*DirectDialer
	dials atomic.Int64
}

func (c *countingDialer) Dial(ctx context.Context, ci controlapi.ConnectorInfo, tc *tls.Config, qc *quic.Config) (*quic.Conn, PathInfo, error) {
	c.dials.Add(1)
	return c.DirectDialer.Dial(ctx, ci, tc, qc)
}

// spreadLab is a controller, one connector (corp-a), an echo server and a
// signed-in daemon keeping up to conns connections per connector.
type spreadLab struct {
	d      *Daemon
	dialer *countingDialer
	port   uint16
}

func newSpreadLab(t testing.TB, conns int, noYield ...bool) *spreadLab {
	t.Helper()
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	l.startConnectorWith("corp-a", nil, func(c *connector.Config) {
		if len(noYield) > 0 && noYield[0] {
			c.BulkQueueTarget = -1
		}
	})
	dd, err := NewDirectDialer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cd := &countingDialer{DirectDialer: dd}
	fe := NewSOCKS5Frontend("127.0.0.1:0")
	d, err := New(Config{StateDir: t.TempDir(), Logger: testenv.Logger(t), Dialer: cd, ConnsPerConnector: conns,
		NewFrontend: func() (Frontend, error) { return fe, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); _ = dd.Close() })
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	return &spreadLab{d: d, dialer: cd, port: echoPort}
}

// open opens a flow to the echo server.
func (s *spreadLab) open(tb testing.TB) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.d.DialTCP(ctx, "127.0.0.1", s.port)
	if err != nil {
		tb.Fatalf("open flow: %v", err)
	}
	return c
}

// warm opens and closes one flow, so that the connections are up.
func (s *spreadLab) warm(tb testing.TB) {
	tb.Helper()
	s.open(tb).Close()
}

// dial opens a flow to the echo server and checks one round trip.
func (s *spreadLab) dial(t *testing.T) *flowConn {
	t.Helper()
	c := s.open(t)
	t.Cleanup(func() { c.Close() })
	echo(t, c, []byte("ping"))
	return c.(*flowConn)
}

// echo writes b (concurrently with reading it back) and checks the echo.
func echo(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		werr <- err
	}()
	got := make([]byte, len(b))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("echo differs")
	}
}

func (s *spreadLab) entry(t *testing.T) *connEntry {
	t.Helper()
	p := s.d.currentPool()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		return e
	}
	t.Fatal("no connector entry")
	return nil
}

// waitConns waits until the connector has n connections (primary and extras).
func (s *spreadLab) waitConns(t *testing.T, n int) {
	t.Helper()
	e := s.entry(t)
	testenv.Eventually(t, 10*time.Second, "connections to the connector", func() bool { return e.connCount() == n })
}

// twoFlowsApart dials a flow, waits for the spare connection and dials a
// second flow, which must go to the idle spare rather than share the first
// one's connection.
func (s *spreadLab) twoFlowsApart(t *testing.T) (first, second *flowConn) {
	t.Helper()
	first = s.dial(t)
	s.waitConns(t, 2)
	second = s.dial(t)
	if second.conn == first.conn {
		t.Fatal("the second flow shares the first one's connection while the spare is idle")
	}
	return first, second
}

// TestSpreadFlowsOverConnections: with four connections allowed, the
// primary's spare is dialed at once, more are dialed as flows pile up, and
// concurrent flows are spread over all of them (never more than four); the
// extras reuse the held token instead of asking the controller again.
func TestSpreadFlowsOverConnections(t *testing.T) {
	s := newSpreadLab(t, 4)
	first := s.dial(t)
	s.waitConns(t, 2) // the spare
	var flows []*flowConn
	flows = append(flows, first)
	for i := 0; i < 11; i++ {
		flows = append(flows, s.dial(t))
	}
	s.waitConns(t, 4)
	for i := 0; i < 8; i++ {
		flows = append(flows, s.dial(t))
	}
	per := map[*quic.Conn]int{}
	for _, f := range flows {
		per[f.conn]++
	}
	if len(per) < 3 {
		t.Fatalf("20 flows used %d connections, want at least 3 of 4", len(per))
	}
	if n := s.entry(t).connCount(); n != 4 {
		t.Fatalf("%d connections to the connector, want 4 (the configured most)", n)
	}
	if d := s.dialer.dials.Load(); d != 4 {
		t.Fatalf("%d dials, want 4", d)
	}
	// Every connection carries working flows.
	for _, f := range flows {
		echo(t, f, []byte("again"))
	}
}

// TestSingleConnectionWhenConfigured: ConnsPerConnector 1 keeps the old
// behaviour, one connection however many flows.
func TestSingleConnectionWhenConfigured(t *testing.T) {
	s := newSpreadLab(t, 1)
	var flows []*flowConn
	for i := 0; i < 6; i++ {
		flows = append(flows, s.dial(t))
	}
	for _, f := range flows[1:] {
		if f.conn != flows[0].conn {
			t.Fatal("a flow went to a second connection with ConnsPerConnector 1")
		}
	}
	if d := s.dialer.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
}

// TestBulkFlowSteersInteractiveFlows: a flow that moves more than bulkBytes
// within bulkWindow marks its connection bulk; new flows then go to another
// connection, also when that one already carries more flows; when the bulk
// flow ends, its connection takes new flows again.
func TestBulkFlowSteersInteractiveFlows(t *testing.T) {
	s := newSpreadLab(t, 2)
	bulk, _ := s.twoFlowsApart(t)
	// Turn the first flow bulk: 2 MiB echoed at once.
	payload := make([]byte, 2<<20)
	echo(t, bulk, payload)
	p := s.d.currentPool()
	testenv.Eventually(t, 5*time.Second, "bulk mark", func() bool {
		p.loadMu.Lock()
		defer p.loadMu.Unlock()
		return p.bulk[bulk.conn] == 1
	})
	// Now the spare has a flow and the bulk connection has one: without the
	// mark they tie and the primary would win. Every new flow must avoid the
	// bulk connection.
	for i := 0; i < 4; i++ {
		f := s.dial(t)
		if f.conn == bulk.conn {
			t.Fatalf("interactive flow %d placed on the connection carrying a bulk flow", i)
		}
	}
	if err := bulk.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "bulk mark released", func() bool {
		p.loadMu.Lock()
		defer p.loadMu.Unlock()
		return p.bulk[bulk.conn] == 0 && p.streams[bulk.conn] == 0
	})
	if f := s.dial(t); f.conn != bulk.conn {
		t.Fatal("after the bulk flow ended, a new flow did not go to its now idle connection")
	}
}

// TestConnectionDeathMovesOnlyItsFlows: when one connection dies, the flows
// on the others keep working and new flows go to the survivors at once,
// without a dial; when the primary dies, an extra takes its place (no
// reconnect, no wait).
func TestConnectionDeathMovesOnlyItsFlows(t *testing.T) {
	s := newSpreadLab(t, 2)
	a, b := s.twoFlowsApart(t)
	e := s.entry(t)
	e.mu.Lock()
	primaryIsA := e.conn == a.conn
	e.mu.Unlock()
	if !primaryIsA {
		t.Fatal("the first flow is not on the primary connection")
	}
	// Kill the primary.
	dials := s.dialer.dials.Load()
	_ = a.conn.CloseWithError(quicErrDead, "test: connection dies")
	testenv.Eventually(t, 5*time.Second, "the extra promoted", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.conn == b.conn
	})
	echo(t, b, []byte("still here"))
	start := time.Now()
	c := s.dial(t)
	if c.conn == a.conn {
		t.Fatal("a new flow went to the dead connection")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("new flow after the primary died took %v", el)
	}
	// The promoted connection got a new spare behind it, one dial.
	s.waitConns(t, 2)
	if d := s.dialer.dials.Load() - dials; d != 1 {
		t.Errorf("%d dials after the primary died, want 1 (the new spare)", d)
	}
	// Now kill the extra: the primary's flows are untouched.
	e.mu.Lock()
	if len(e.extras) != 1 {
		e.mu.Unlock()
		t.Fatalf("%d extras", len(e.extras))
	}
	x := e.extras[0].conn
	e.mu.Unlock()
	_ = x.CloseWithError(quicErrDead, "test: extra dies")
	testenv.Eventually(t, 5*time.Second, "the dead extra forgotten", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		_, gone := e.extraLocked(x)
		return gone == nil
	})
	for _, f := range []*flowConn{b, c} {
		if f.conn != x {
			echo(t, f, []byte("primary flows unaffected"))
		}
	}
	if f := s.dial(t); f.conn == x {
		t.Fatal("a new flow went to the dead extra")
	}
}

// TestPickConnection: the placement rule on its own. Connections without a
// bulk flow come first; among them, the first that is not full (spreadAt
// flows) in order, primary first; when all are full, the least loaded.
func TestPickConnection(t *testing.T) {
	c := []*quic.Conn{new(quic.Conn), new(quic.Conn), new(quic.Conn)}
	name := map[*quic.Conn]string{c[0]: "primary", c[1]: "extra1", c[2]: "extra2"}
	cases := []struct {
		what     string
		spreadAt int
		streams  []int
		bulk     []int
		want     string
	}{
		{"all idle: primary", 1, []int{0, 0, 0}, []int{0, 0, 0}, "primary"},
		{"spread: the first empty one", 1, []int{1, 0, 0}, []int{0, 0, 0}, "extra1"},
		{"spread: least loaded when all have flows", 1, []int{3, 2, 5}, []int{0, 0, 0}, "extra1"},
		{"pack: the primary until it is full", 4, []int{3, 0, 0}, []int{0, 0, 0}, "primary"},
		{"pack: the next one once the primary is full", 4, []int{4, 1, 0}, []int{0, 0, 0}, "extra1"},
		{"bulk avoided even when busier", 1, []int{1, 7, 9}, []int{1, 0, 0}, "extra1"},
		{"pack: bulk avoided", 100, []int{1, 2, 0}, []int{1, 0, 0}, "extra1"},
		{"all bulk: least loaded", 1, []int{2, 1, 3}, []int{1, 1, 1}, "extra1"},
	}
	for _, tc := range cases {
		p := &pool{streams: map[*quic.Conn]int{}, bulk: map[*quic.Conn]int{}, spreadAt: tc.spreadAt}
		for i := range c {
			p.streams[c[i]], p.bulk[c[i]] = tc.streams[i], tc.bulk[i]
		}
		got, load, bulk := p.pickLocked(c)
		if name[got] != tc.want {
			t.Errorf("%s: picked %s (load %d, bulk %v), want %s", tc.what, name[got], load, bulk, tc.want)
		}
	}
}

// TestRetireExtra: the spare stays however long it is idle; another extra
// closes after extraIdle without a flow; one that may take no new flow
// (draining, or pinned to a certificate the primary no longer uses) closes
// as soon as its flows have ended; none closes while it carries a flow.
func TestRetireExtra(t *testing.T) {
	now := time.Now()
	e := &connEntry{conn: new(quic.Conn), digest: "new"}
	spare := &extraConn{digest: "new"}
	other := &extraConn{digest: "new"}
	stale := &extraConn{digest: "old"}
	e.extras = []*extraConn{spare, other, stale}
	tick := func(x *extraConn, open int, at time.Time) bool {
		i := -1
		for j, y := range e.extras {
			if y == x {
				i = j
			}
		}
		if i < 0 {
			t.Fatal("extra already forgotten")
		}
		return e.retireExtraLocked(i, x, open, at)
	}
	for _, x := range e.extras {
		if tick(x, 3, now) {
			t.Fatal("an extra with flows retired")
		}
	}
	if tick(stale, 0, now) {
		t.Fatal("retired on the tick its last flow ended, before its idle clock started")
	}
	if !tick(stale, 0, now.Add(100*time.Millisecond)) {
		t.Fatal("an extra pinned to the old certificate stayed after its flows ended")
	}
	if tick(other, 0, now) || tick(other, 0, now.Add(extraIdle/2)) {
		t.Fatal("a non-spare extra retired before extraIdle")
	}
	if !tick(other, 0, now.Add(extraIdle+time.Second)) {
		t.Fatal("a non-spare extra idle for longer than extraIdle stayed")
	}
	if tick(spare, 0, now) || tick(spare, 0, now.Add(10*extraIdle)) {
		t.Fatal("the spare retired while idle")
	}
	spare.draining = true
	if !tick(spare, 0, now.Add(11*extraIdle)) {
		t.Fatal("a draining spare stayed")
	}
	if len(e.extras) != 0 {
		t.Fatalf("%d extras left", len(e.extras))
	}
}

// TestRelayedConnectorKeepsTwoConnections: a connector reached through a
// relay gets the primary and the spare only (each relayed connection is a
// TURN allocation); a direct one grows up to the configured most.
func TestRelayedConnectorKeepsTwoConnections(t *testing.T) {
	p := newPool(failingDialer{attempts: make(chan time.Time, 8)}, &staticTokens{}, testenv.Logger(t), nil)
	p.maxConns = 4
	e := p.entry(controlapi.ConnectorInfo{ID: "c1", Name: "corp-a", Online: true})
	e.mu.Lock()
	e.conn, e.path = new(quic.Conn), PathInfo{Path: "relay"}
	e.extras = []*extraConn{{conn: new(quic.Conn)}}
	e.mu.Unlock()
	if p.growExtra(e) {
		t.Fatal("a third connection was dialed to a relayed connector")
	}
	e.mu.Lock()
	e.path = PathInfo{Path: "direct"}
	e.mu.Unlock()
	if !p.growExtra(e) {
		t.Fatal("no third connection to a direct connector allowed four")
	}
	e.mu.Lock()
	e.conn, e.extras = nil, nil // stand-ins: nothing to close
	e.mu.Unlock()
	p.close() // waits for the (failing) dial just started
}
