package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/srcaddr"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

func udpAddr(s string) *net.UDPAddr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestAdmissionCounts(t *testing.T) {
	var refused []string
	a := newAdmission(3, 2, func(_ netip.Prefix, why string) { refused = append(refused, why) })
	admit := func(addr string, verified bool) (context.CancelFunc, context.Context, error) {
		ctx, cancel := context.WithCancel(context.Background())
		cctx, err := a.connContext(ctx, &quic.ClientInfo{RemoteAddr: udpAddr(addr), AddrVerified: verified})
		return cancel, cctx, err
	}
	c1, _, err1 := admit("192.0.2.1:1000", false)
	_, t2, err2 := admit("[::ffff:192.0.2.1]:1001", true) // the same address, v4-mapped
	if err1 != nil || err2 != nil {
		t.Fatalf("two connections under a per-address limit of 2 refused: %v %v", err1, err2)
	}
	if _, _, err := admit("192.0.2.1:1002", false); !errors.Is(err, errTooManyPending) || !strings.Contains(err.Error(), "from 192.0.2.1") {
		t.Fatalf("a third connection from one address: %v, want the per-address refusal", err)
	}
	if _, _, err := admit("192.0.2.2:1000", false); err != nil {
		t.Fatalf("another address refused: %v", err)
	}
	if _, _, err := admit("192.0.2.3:1000", false); !errors.Is(err, errTooManyPending) || !strings.Contains(err.Error(), "the connector's limit") {
		t.Fatalf("a fourth connection in all: %v, want the total refusal", err)
	}
	if len(refused) != 2 {
		t.Fatalf("onRefuse called %d times, want 2", len(refused))
	}
	// The end of a connection and an accepted token both release, once.
	c1()
	testenv.Eventually(t, 10*time.Second, "the closed connection's place", func() bool { tot, n := a.pending(udpAddr("192.0.2.1:1")); return tot == 2 && n == 1 })
	tk := t2.Value(admitKey{}).(*admitTicket)
	tk.release()
	tk.release()
	if tot, n := a.pending(udpAddr("192.0.2.1:1")); tot != 1 || n != 0 {
		t.Fatalf("after a token: %d pending, %d from the address; want 1 and 0", tot, n)
	}
	if a.unverified.Total() != 1 || a.unverified.Of(srcaddr.Key(udpAddr("192.0.2.2:1"))) != 1 {
		t.Fatalf("%d unverified, want 192.0.2.2's", a.unverified.Total())
	}
	// IPv6 sources count by their /64.
	a6 := newAdmission(10, 2, nil)
	for i, from := range []string{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:1", "[2001:db8:1:2::77]:1"} {
		_, err := a6.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: udpAddr(from)})
		if (i < 2) != (err == nil) || (err != nil && !strings.Contains(err.Error(), "from 2001:db8:1:2::/64")) {
			t.Fatalf("connection %d from one /64: %v", i+1, err)
		}
	}
}

func TestAdmissionAsksForRetry(t *testing.T) {
	a := newAdmission(1<<20, 1<<20, nil)
	from := udpAddr("192.0.2.9:4000")
	for i := 0; i < retryAbovePerAddr; i++ {
		if a.needRetry(from) {
			t.Fatalf("Retry asked with %d unvalidated pending from the address", i)
		}
		if _, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: from}); err != nil {
			t.Fatal(err)
		}
	}
	if !a.needRetry(from) {
		t.Fatalf("no Retry with %d unvalidated pending from the address", retryAbovePerAddr)
	}
	// Validated connections do not count towards it.
	if _, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: udpAddr("192.0.2.10:1"), AddrVerified: true}); err != nil {
		t.Fatal(err)
	}
	if a.needRetry(udpAddr("192.0.2.10:2")) {
		t.Fatal("Retry asked of an address with only validated connections")
	}
	for i := 0; a.unverified.Total() < retryAboveTotal; i++ {
		if _, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: udpAddr(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 1).String())}); err != nil {
			t.Fatal(err)
		}
	}
	if !a.needRetry(udpAddr("203.0.113.1:1")) {
		t.Fatalf("no Retry with %d unvalidated pending in all", retryAboveTotal)
	}
}

// TestPendingConnectionsBounded: connections that completed the QUIC
// handshake but sent no token hold places; over the per-address limit a new
// one is refused at its first packet (CONNECTION_REFUSED), and a token or a
// close gives the place back.
// TestRefusedSourceHeld: a source (address and port) that was refused is
// refused again for refusedHold, even after a place was freed: a late second
// Initial packet of its ClientHello must not take the place for a client
// that has given up. Other ports of the same address are not held, and the
// hold ends.
func TestRefusedSourceHeld(t *testing.T) {
	var refused []string
	a := newAdmission(100, 1, func(_ netip.Prefix, why string) { refused = append(refused, why) })
	now := time.Unix(1700000000, 0)
	a.now = func() time.Time { return now }
	admit := func(addr string) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := a.connContext(ctx, &quic.ClientInfo{RemoteAddr: udpAddr(addr)})
		return cancel, err
	}
	first, err := admit("192.0.2.1:1000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admit("192.0.2.1:2000"); !errors.Is(err, errTooManyPending) {
		t.Fatalf("a second connection with a per-address limit of 1: %v, want a refusal", err)
	}
	first() // the place is free again
	testenv.Eventually(t, 10*time.Second, "the closed connection's place", func() bool { tot, _ := a.pending(udpAddr("192.0.2.1:1")); return tot == 0 })
	now = now.Add(refusedHold / 2)
	if _, err := admit("[::ffff:192.0.2.1]:2000"); !errors.Is(err, errTooManyPending) || !strings.Contains(err.Error(), "192.0.2.1:2000 was refused") {
		t.Fatalf("the refused source again within the hold: %v, want a refusal naming it", err)
	}
	if len(refused) != 2 {
		t.Fatalf("onRefuse called %d times, want 2", len(refused))
	}
	if tot, _ := a.pending(udpAddr("192.0.2.1:1")); tot != 0 {
		t.Fatalf("%d pending after a held refusal, want 0", tot)
	}
	other, err := admit("192.0.2.1:3000")
	if err != nil {
		t.Fatalf("another port of the address within the hold: %v", err)
	}
	other()
	testenv.Eventually(t, 10*time.Second, "the other port's place", func() bool { tot, _ := a.pending(udpAddr("192.0.2.1:1")); return tot == 0 })
	// Each refusal, the held one too, holds the source for refusedHold
	// from then.
	now = now.Add(refusedHold - time.Millisecond)
	if _, err := admit("192.0.2.1:2000"); !errors.Is(err, errTooManyPending) {
		t.Fatalf("the source refused again within the hold: %v, want a refusal", err)
	}
	now = now.Add(refusedHold)
	if _, err := admit("192.0.2.1:2000"); err != nil {
		t.Fatalf("the refused source after the hold: %v", err)
	}
}

// TestRefusedHoldBounded: at most maxRefusedHeld sources are remembered;
// expired ones make room, and while all are live a new refusal is simply
// not held.
func TestRefusedHoldBounded(t *testing.T) {
	a := newAdmission(0, 0, nil) // refuses everything
	now := time.Unix(1700000000, 0)
	a.now = func() time.Time { return now }
	src := func(i int) string {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 1).String()
	}
	for i := range maxRefusedHeld + 10 {
		if _, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: udpAddr(src(i))}); err == nil {
			t.Fatal("admitted with limits of 0")
		}
	}
	if len(a.refused) != maxRefusedHeld {
		t.Fatalf("%d sources held, want %d", len(a.refused), maxRefusedHeld)
	}
	now = now.Add(refusedHold)
	if _, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: udpAddr("192.0.2.7:7")}); err == nil {
		t.Fatal("admitted with limits of 0")
	}
	if len(a.refused) != 1 {
		t.Fatalf("%d sources held after the others expired, want 1", len(a.refused))
	}
}

func TestPendingConnectionsBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxPendingPerAddr = 3 })
	tr := e.alice.token()
	var held []*quic.Conn
	for i := 0; i < 3; i++ {
		conn, err := e.alice.dial(tr.CertSHA256)
		if err != nil {
			t.Fatalf("connection %d of 3: %v", i+1, err)
		}
		held = append(held, conn)
	}
	// The refused dial's ClientHello may fill two Initial packets. quic-go
	// keeps no state for a refused connection, so each one asks for a new
	// connection; one handled after the token below would take the freed
	// place for a client that is gone, but the connector holds the refused
	// source for refusedHold (TestRefusedSourceHeld). The test waits until
	// every Initial the dial sent was refused, so that the gauge and the
	// dials below see only the three held connections.
	refusals := e.c.met.handshakeFail.WithLabelValues("too many connections awaiting a token")
	before := counterValue(refusals)
	qt, pc := countingTransport(t)
	_, err := e.alice.dialOn(qt, tr.CertSHA256)
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused || !te.Remote {
		t.Fatalf("a fourth connection awaiting a token: %v, want CONNECTION_REFUSED from the connector", err)
	}
	sent := pc.initialsSent.Load()
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("refusals of the %d Initial packets sent", sent), func() bool {
		return counterValue(refusals)-before >= float64(sent)
	})
	if g := gatherGauge(t, e.c, "postern_connector_pending_connections"); g != 3 {
		t.Fatalf("pending connections gauge %v, want 3", g)
	}
	// A token releases its connection's place; the connection is served.
	_, st, msg, err := authenticate(held[0], tr.Token)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("token on a held connection: %v %v %s", err, st, msg)
	}
	conn, err := e.alice.dial(tr.CertSHA256)
	if err != nil {
		t.Fatalf("a connection after a token freed a place: %v", err)
	}
	// So does a closed connection.
	held[1].CloseWithError(0, "")
	lo := udpAddr("127.0.0.1:1")
	testenv.Eventually(t, 10*time.Second, "the closed connection's place", func() bool { _, n := e.c.admit.pending(lo); return n == 2 })
	if _, err := e.alice.dial(tr.CertSHA256); err != nil {
		t.Fatalf("a connection after a close freed a place: %v", err)
	}
	_ = conn
	// The authenticated connection still carries flows.
	cc := &clientConn{t: t, conn: held[0]}
	st2 := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "echo after the refusals")
	echoRoundTrip(t, st2, "still served")
}

// packetCounter counts the QUIC v1 Retry packets received on a socket and
// the Initial packets sent from it.
type packetCounter struct {
	net.PacketConn
	retries      atomic.Int64
	initialsSent atomic.Int64
}

func (c *packetCounter) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if n > 0 && b[0]&0xf0 == 0xf0 { // long header, fixed bit, type Retry
		c.retries.Add(1)
	}
	return n, a, err
}

// countingTransport is a QUIC transport on a new 127.0.0.1 socket that
// counts its packets; both close at the end of the test.
func countingTransport(t *testing.T) (*quic.Transport, *packetCounter) {
	t.Helper()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc := &packetCounter{PacketConn: uc}
	qt := &quic.Transport{Conn: pc}
	t.Cleanup(func() { qt.Close(); uc.Close() })
	return qt, pc
}

func (c *packetCounter) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > 0 && b[0]&0xf0 == 0xc0 { // long header, fixed bit, type Initial
		c.initialsSent.Add(1)
	}
	return c.PacketConn.WriteTo(b, addr)
}

// TestManyPendingConnectionsNeedRetry: past retryAbovePerAddr connections
// awaiting a token from one address, a new one must prove its address with a
// QUIC Retry first, and then is served as usual.
func TestManyPendingConnectionsNeedRetry(t *testing.T) {
	e := newEnv(t, nil)
	qt, rc := countingTransport(t)
	tr := e.alice.token()
	for i := 0; i < retryAbovePerAddr; i++ {
		if _, err := e.alice.dialOn(qt, tr.CertSHA256); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	if n := rc.retries.Load(); n != 0 {
		t.Fatalf("%d Retry packets for the first %d connections, want none", n, retryAbovePerAddr)
	}
	conn, err := e.alice.dialOn(qt, tr.CertSHA256)
	if err != nil {
		t.Fatalf("connection past the Retry threshold: %v", err)
	}
	// One Retry per Initial packet without a token: a ClientHello may
	// take two.
	if n := rc.retries.Load(); n < 1 {
		t.Fatalf("no Retry packet for connection %d", retryAbovePerAddr+1)
	}
	_, st, msg, err := authenticate(conn, tr.Token)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("token on the validated connection: %v %v %s", err, st, msg)
	}
	cc := &clientConn{t: t, conn: conn}
	echoRoundTrip(t, cc.mustOpen(e.echoFlow(e.resourceID("echo")), "echo on the validated connection"), "served")
}

func gatherGauge(t *testing.T, c *Connector, name string) float64 {
	t.Helper()
	mfs, err := c.met.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestTokenlessFloodLeavesOthersServed: one address opens connections that
// never send a token, as fast as it can. Past 16 it must answer Retry, past
// the per-address limit it is refused; meanwhile an authenticated flow keeps
// echoing and a device on another address connects and is served. When the
// flood's connections end, nothing is left counted.
func TestTokenlessFloodLeavesOthersServed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxPendingPerAddr = 40 })
	held := e.alice.connect()
	echo := held.mustOpen(e.echoFlow(e.resourceID("echo")), "echo before the flood")
	tr := e.alice.token()

	flood, rc := countingTransport(t)
	var mu sync.Mutex
	var open []*quic.Conn
	var refused, other atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				conn, err := e.alice.dialOn(flood, tr.CertSHA256)
				var te *quic.TransportError
				switch {
				case err == nil:
					mu.Lock()
					open = append(open, conn)
					mu.Unlock()
				case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	// The authenticated flow is served while the flood runs.
	for i := 0; i < 20; i++ {
		echoRoundTrip(t, echo, fmt.Sprintf("during the flood %d", i))
	}
	wg.Wait()
	if n := len(open); n != 40 || refused.Load() != 40 || other.Load() != 0 {
		t.Fatalf("80 token-less connections from one address with a limit of 40: %d open, %d refused, %d other errors", n, refused.Load(), other.Load())
	}
	if rc.retries.Load() == 0 {
		t.Fatal("no Retry asked of a flood from one address")
	}
	if g := gatherGauge(t, e.c, "postern_connector_pending_connections"); g != 40 {
		t.Fatalf("pending connections gauge %v, want 40", g)
	}
	// A device on another address connects and is served meanwhile.
	other2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	otr := &quic.Transport{Conn: other2}
	defer func() { otr.Close(); other2.Close() }()
	conn, err := e.alice.dialOn(otr, tr.CertSHA256)
	if err != nil {
		t.Fatalf("a connection from another address during the flood: %v", err)
	}
	if _, st, msg, err := authenticate(conn, tr.Token); err != nil || st != wire.StatusOK {
		t.Fatalf("token from another address during the flood: %v %v %s", err, st, msg)
	}
	cc := &clientConn{t: t, conn: conn}
	echoRoundTrip(t, cc.mustOpen(e.echoFlow(e.resourceID("echo")), "echo from another address"), "served")
	for _, c := range open {
		c.CloseWithError(0, "")
	}
	testenv.Eventually(t, 10*time.Second, "the flood's places released", func() bool { tot, _ := e.c.admit.pending(udpAddr("127.0.0.1:1")); return tot == 0 })
}
