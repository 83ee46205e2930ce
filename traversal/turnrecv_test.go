package traversal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun"
	"golang.org/x/net/ipv4"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/traversal/udpbatch"
)

var (
	testRelay = netip.MustParseAddrPort("192.0.2.1:3478")
	testPeer  = netip.MustParseAddrPort("198.51.100.7:4000")
)

// fakePion stands in for pion's client: the channels it bound and the STUN
// messages handed to it.
type fakePion struct {
	chans   map[uint16]net.Addr
	handled atomic.Int32
	fail    bool
}

func (p *fakePion) lookup(n uint16) (net.Addr, bool) { a, ok := p.chans[n]; return a, ok }

func (p *fakePion) HandleInbound(b []byte, _ net.Addr) (bool, error) {
	p.handled.Add(1)
	if !stun.IsMessage(b) {
		return true, errors.New("not STUN")
	}
	if p.fail {
		return true, errors.New("no transaction")
	}
	return true, nil
}

// newTestReceiver returns a receiver with no socket behind it, for a relay
// at testRelay and pion bound channel 0x4001 to testPeer.
func newTestReceiver() (*turnReceiver, *fakePion) {
	f := &turnFastPath{server: testRelay, done: make(chan struct{})}
	f.chans.Store(&map[netip.AddrPort]*fastChan{})
	f.byNum.Store(&map[uint16]*fastChan{})
	p := &fakePion{chans: map[uint16]net.Addr{0x4001: net.UDPAddrFromAddrPort(testPeer)}}
	f.setLookup(p.lookup)
	r := &turnReceiver{f: f, handle: p.HandleInbound, queue: make(chan inbound, pumpQueue)}
	return r, p
}

func chanData(num uint16, payload []byte, pad int) []byte {
	b := make([]byte, channelHeader, channelHeader+len(payload)+pad)
	binary.BigEndian.PutUint16(b, num)
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	b = append(b, payload...)
	return append(b, make([]byte, pad)...)
}

func dataIndication(t *testing.T, peer netip.AddrPort, data []byte, withData bool) []byte {
	t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		setterFunc(func(m *stun.Message) error {
			return stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
		})}
	if withData {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrData, Value: data})
	}
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// Every kind of datagram on an allocation's socket goes where it belongs:
// ChannelData on a channel pion bound and Data indications to quic-go with
// the peer's address, other STUN messages to pion, and the rest (garbage,
// truncated ChannelData, unknown channels, data not from the relay) is
// dropped and counted, never handed to pion and never a panic.
func TestTURNReceiverDispatch(t *testing.T) {
	relay, elsewhere := net.UDPAddrFromAddrPort(testRelay), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.9:3478"))
	binding, err := stun.Build(stun.TransactionID, stun.BindingSuccess)
	if err != nil {
		t.Fatal(err)
	}
	badSTUN := append([]byte(nil), binding.Raw...)
	binary.BigEndian.PutUint16(badSTUN[2:], 400) // length past the end
	truncInd := dataIndication(t, testPeer, []byte("x"), true)
	truncInd = truncInd[:len(truncInd)-4]
	payload := []byte("quic packet")
	// pion/stun v0.6.1 panicked on an empty address attribute at the end.
	emptyPeerMsg, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: payload}, stun.RawAttribute{Type: stun.AttrXORPeerAddress})
	if err != nil {
		t.Fatal(err)
	}
	emptyPeer := emptyPeerMsg.Raw
	cases := []struct {
		name    string
		d       []byte
		from    net.Addr
		want    []byte // payload for quic-go, nil: none
		counter func(*recvCounts) *atomic.Uint64
		pion    bool
	}{
		{"empty", nil, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.other }, false},
		{"garbage", []byte{0xff, 1, 2, 3, 4, 5}, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.other }, false},
		{"short ChannelData header", []byte{0x40, 0x01, 0x00}, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"truncated ChannelData", chanData(0x4001, payload, 0)[:8], relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"unknown channel", chanData(0x4002, payload, 0), relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.unknown }, false},
		{"reserved channel number", chanData(0x7fff, payload, 0), relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.unknown }, false},
		{"ChannelData not from the relay", chanData(0x4001, payload, 0), elsewhere, nil, func(n *recvCounts) *atomic.Uint64 { return &n.foreign }, false},
		{"ChannelData", chanData(0x4001, payload, 0), relay, payload, func(n *recvCounts) *atomic.Uint64 { return &n.fast }, false},
		{"padded ChannelData", chanData(0x4001, payload[:5], 3), relay, payload[:5], func(n *recvCounts) *atomic.Uint64 { return &n.fast }, false},
		{"empty ChannelData", chanData(0x4001, nil, 0), relay, []byte{}, func(n *recvCounts) *atomic.Uint64 { return &n.fast }, false},
		{"STUN response", binding.Raw, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.pion }, true},
		{"malformed STUN", badSTUN, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"Data indication with an empty peer", emptyPeer, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"Data indication", dataIndication(t, testPeer, payload, true), relay, payload, func(n *recvCounts) *atomic.Uint64 { return &n.fast }, false},
		{"Data indication without data", dataIndication(t, testPeer, nil, false), relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"truncated Data indication", truncInd, relay, nil, func(n *recvCounts) *atomic.Uint64 { return &n.malformed }, false},
		{"Data indication not from the relay", dataIndication(t, testPeer, payload, true), elsewhere, nil, func(n *recvCounts) *atomic.Uint64 { return &n.foreign }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, p := newTestReceiver()
			got, peer := r.dispatch(tc.d, tc.from)
			if (got == nil) != (tc.want == nil) || !bytes.Equal(got, tc.want) {
				t.Fatalf("payload %q, want %q", got, tc.want)
			}
			if tc.want != nil {
				if ap, ok := udpbatch.AddrPortOf(peer); !ok || ap != testPeer {
					t.Fatalf("peer %v, want %s", peer, testPeer)
				}
			}
			if c := tc.counter(&r.n); c.Load() != 1 {
				t.Fatalf("counter %d, want 1 (counts %+v)", c.Load(), countsOf(r))
			}
			if total := sumCounts(r); total != 1 {
				t.Fatalf("%d counters moved, want 1 (%+v)", total, countsOf(r))
			}
			if handled := p.handled.Load() == 1; handled != tc.pion {
				t.Fatalf("handed to pion: %v, want %v", handled, tc.pion)
			}
		})
	}
	// pion refusing a STUN message is counted.
	r, p := newTestReceiver()
	p.fail = true
	if got, _ := r.dispatch(binding.Raw, relay); got != nil || r.n.pionErr.Load() != 1 {
		t.Fatalf("payload %q, pion errors %d; want none and 1", got, r.n.pionErr.Load())
	}
	// A channel used once is confirmed for sending too.
	r, _ = newTestReceiver()
	r.dispatch(chanData(0x4001, payload, 0), relay)
	if c, _ := r.f.route(net.UDPAddrFromAddrPort(testPeer)); c == nil || c.num != 0x4001 {
		t.Fatal("a channel the relay used did not join the sending fast path")
	}
}

func countsOf(r *turnReceiver) map[string]uint64 {
	n := &r.n
	return map[string]uint64{"fast": n.fast.Load(), "pion": n.pion.Load(), "pionErr": n.pionErr.Load(), "unknown": n.unknown.Load(),
		"malformed": n.malformed.Load(), "foreign": n.foreign.Load(), "other": n.other.Load(), "tooLarge": n.tooLarge.Load(), "queueFull": n.queueFull.Load()}
}

// sumCounts is the total of the counters that classify a datagram (pionErr
// counts a subset of pion).
func sumCounts(r *turnReceiver) uint64 {
	var s uint64
	for k, v := range countsOf(r) {
		if k != "pionErr" {
			s += v
		}
	}
	return s
}

// Random bytes, and random bytes behind a ChannelData or STUN header, never
// panic and always land in exactly one counter.
func FuzzTURNReceiverDispatch(f *testing.F) {
	f.Add([]byte{0x40, 0x01, 0x00, 0x02, 1, 2})
	f.Add([]byte{0x40, 0x01, 0xff, 0xff})
	f.Add([]byte{0x00, 0x17, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 0x13, 0x00, 0x00})
	f.Add([]byte{0x01, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	// A Data indication with an empty XOR-PEER-ADDRESS: pion/stun v0.6.1
	// panicked on it (found by make test's fuzzing in CI).
	f.Add([]byte{0x00, 0x17, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 0x12, 0x00, 0x00})
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 64; i++ {
		b := make([]byte, rnd.Intn(64))
		rnd.Read(b)
		f.Add(b)
	}
	relay := net.UDPAddrFromAddrPort(testRelay)
	f.Fuzz(func(t *testing.T, d []byte) {
		r, _ := newTestReceiver()
		got, _ := r.dispatch(d, relay)
		if got != nil && len(got) > len(d) {
			t.Fatalf("payload of %d bytes from a datagram of %d", len(got), len(d))
		}
		if total := sumCounts(r); total != 1 {
			t.Fatalf("%d counters moved, want 1 (%+v)", total, countsOf(r))
		}
	})
}

// A relay that sends a datagram pion cannot handle (ChannelData on a
// channel it does not have, a STUN message it cannot decode) does not stop
// the allocation: data and pion's transactions still get through. pion's
// own read loop ended at the first such datagram, and every later
// permission, refresh and datagram of the allocation was lost.
func TestTURNReceiverSurvivesDatagramsPionRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	al, srv := plainAllocation(t, ctx)
	rc := al.conn.(*udpRelayPacketConn).relayPacketConn
	client := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: al.base.LocalAddr().(*net.UDPAddr).Port}
	binding, err := stun.Build(stun.TransactionID, stun.BindingSuccess)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), binding.Raw...)
	binary.BigEndian.PutUint16(bad[2:], 400)
	for _, d := range [][]byte{chanData(0x4ffe, []byte("nobody"), 0), bad, {0xff, 0xff}} {
		if _, err := srv.PacketConn.WriteTo(d, client); err != nil {
			t.Fatal(err)
		}
	}
	// quic-go is not reading: the pump hands them on (or drops them)
	// while it is away.
	testenv.Eventually(t, 5*time.Second, "the pump to handle the relay's datagrams", func() bool {
		n := &rc.rcv.n
		return n.unknown.Load() == 1 && n.pion.Load() >= 1 && n.other.Load() == 1
	})
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// A pion transaction after them.
	if err := al.permit([]*net.UDPAddr{peer.LocalAddr().(*net.UDPAddr)}); err != nil {
		t.Fatalf("permission after datagrams pion refuses: %v", err)
	}
	// Data from the peer, as Data indications and then ChannelData once
	// pion bound the channel.
	buf := make([]byte, 1500)
	relayed := al.conn.LocalAddr()
	for i := 0; ; i++ {
		if _, err := peer.WriteTo([]byte("down"), relayed); err != nil {
			t.Fatal(err)
		}
		_ = al.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := al.conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read %d: %v (counts %+v)", i, err, countsOf(rc.rcv))
		}
		if string(buf[:n]) != "down" || from.String() != peer.LocalAddr().String() {
			t.Fatalf("read %q from %s, want \"down\" from %s", buf[:n], from, peer.LocalAddr())
		}
		if len(*rc.fast.byNum.Load()) > 0 {
			break // that one came as ChannelData
		}
		if ctx.Err() != nil {
			t.Fatal("no ChannelData from the relay")
		}
		// pion binds a channel on its first write to the peer.
		if _, err := al.conn.WriteTo([]byte("up"), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := peer.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// socketReceiver returns a relay's socket and a client's, both on
// loopback, and a test receiver whose relay is that socket.
func socketReceiver(t *testing.T) (relay, sock *net.UDPConn, r *turnReceiver, p *fakePion) {
	t.Helper()
	relay, sock = loopbackUDP(t), loopbackUDP(t)
	r, p = newTestReceiver()
	r.f.server = relay.LocalAddr().(*net.UDPAddr).AddrPort()
	return relay, sock, r, p
}

func loopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// What the pump reads while quic-go is not reading waits for quic-go's
// first ReadFrom; a payload larger than quic-go's buffer is dropped and
// counted (pion returned io.ErrShortBuffer, which ends quic-go's
// transport); a datagram arriving while both wait reaches ReadFrom
// whichever of them reads it, and a deadline ends ReadFrom as on a socket.
func TestTURNReceiverPumpQueuesForQuicGo(t *testing.T) {
	relay, sock, r, p := socketReceiver(t)
	pr := newTurnReceiver(sock, r.f)
	pr.start(p.HandleInbound)
	defer close(r.f.done)
	send := func(d []byte) {
		t.Helper()
		if _, err := relay.WriteTo(d, sock.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	send(chanData(0x4001, []byte("early"), 0))
	send(chanData(0x4001, bytes.Repeat([]byte{1}, 200), 0))
	send(chanData(0x4001, []byte("after"), 0))
	testenv.Eventually(t, 5*time.Second, "the pump to queue three datagrams", func() bool { return pr.n.fast.Load() == 3 })
	// Nothing waits in the socket now: these come from the queue.
	_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, want := range []string{"early", "after"} {
		n, from, err := pr.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want || from.String() != testPeer.String() {
			t.Fatalf("read %q from %s, want %q from %s", buf[:n], from, want, testPeer)
		}
	}
	if pr.n.tooLarge.Load() != 1 {
		t.Fatalf("%d datagrams too large for the buffer counted, want 1", pr.n.tooLarge.Load())
	}
	// Both wait for the socket now.
	send(chanData(0x4001, []byte("direct"), 0))
	n, _, err := pr.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "direct" {
		t.Fatalf("read %q, %v; want \"direct\"", buf[:n], err)
	}
	if pr.n.queueFull.Load() != 0 || len(pr.queue) != 0 {
		t.Fatal("datagrams left in the pump's queue")
	}
	// A deadline ends ReadFrom with a timeout, as on a UDP socket.
	_ = sock.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := pr.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
}

// quic-go's ReadBatch takes what one socket read brought in one call: a run
// of ChannelData the relay sent with GSO (one coalesced buffer where the
// socket has GRO, else one recvmmsg) reaches quic-go's messages, each with
// its payload and peer; what does not fit the messages waits for the next
// call, which does not read the socket first.
func TestTURNReceiverReadBatchTakesARun(t *testing.T) {
	relay, sock, r, _ := socketReceiver(t)
	pr := newTurnReceiver(sock, r.f)
	if pr.rd == nil {
		t.Skip("no batch reads on this platform")
	}
	to := sock.LocalAddr().(*net.UDPAddr).AddrPort()
	w := udpbatch.NewWriter(relay)
	var want [][]byte
	for i := range 6 {
		p := bytes.Repeat([]byte{byte(i)}, 1000)
		if i == 5 {
			p = p[:300] // the last of a run may be shorter
		}
		want = append(want, p)
		d := chanData(0x4001, p, 0)
		w.Append(d[:channelHeader], d[channelHeader:], to)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	ms := make([]ipv4.Message, 4)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1452)}
	}
	var got [][]byte
	for calls := 1; len(got) < len(want); calls++ {
		n, err := pr.ReadBatch(ms)
		if err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		if calls == 1 && n != len(ms) {
			t.Fatalf("first call took %d datagrams of a run of %d, want %d", n, len(want), len(ms))
		}
		for _, m := range ms[:n] {
			if m.Addr.String() != testPeer.String() {
				t.Fatalf("datagram from %s, want %s", m.Addr, testPeer)
			}
			got = append(got, append([]byte(nil), m.Buffers[0][:m.N]...))
		}
		if calls > 2 {
			t.Fatalf("%d calls for a run of %d into %d messages", calls, len(want), len(ms))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: %d bytes, want %d bytes of %d", i, len(got[i]), len(want[i]), i)
		}
	}
	if pr.buffered() {
		t.Fatal("datagrams left after the run")
	}
}
