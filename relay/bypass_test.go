package relay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
)

func channelData(num uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, num)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// readChannelData reads one datagram from c and checks it is payload
// framed as ChannelData on num, padded as pion pads.
func readChannelData(t *testing.T, c *net.UDPConn, num uint16, payload []byte) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no ChannelData at the client: %v", err)
	}
	if want := channelData(num, payload); !bytes.Equal(buf[:n], want) {
		t.Fatalf("client got % x…, want % x…", buf[:min(n, 12)], want[:min(len(want), 12)])
	}
}

// The bypass carries a peer only after pion framed that peer's datagram,
// of the length it was handed, as ChannelData; only for confirm after
// that; never after a ChannelBind request until pion framed the peer
// again; and never for a revoked client. Whatever pion wrote that is not
// the framing of the datagram it was handed teaches it nothing.
func TestBypassLearnsOnlyFromPionsFraming(t *testing.T) {
	sock, client := udpPair(t)
	var revoked atomic.Bool
	bp := newBypass(client.LocalAddr(), newBatchWriter(sock), func(net.Addr) bool { return revoked.Load() }, time.Hour)
	peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	other := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5001}
	data := []byte("hello")
	carried := func(from net.Addr) bool {
		t.Helper()
		before := bp.w.w.Len()
		took := bp.take(data, from)
		if !took && bp.w.w.Len() != before {
			t.Fatal("a datagram the bypass did not take was queued")
		}
		return took
	}
	if carried(peer) {
		t.Fatal("a peer pion never framed was carried")
	}
	// pion sent no ChannelData for it (a Data indication, or nothing).
	bp.handOff(peer, len(data))
	bp.settle()
	if carried(peer) {
		t.Fatal("a peer pion did not frame was carried")
	}
	// ChannelData that is not the datagram pion was handed.
	for _, b := range [][]byte{
		nil,
		{0x40},
		{0x40, 0x01, 0x00},
		{0x01, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'}, // STUN, not ChannelData
		channelData(0x4001, []byte("hello!")),             // another length
		{0x40, 0x01, 0x00, 0x05, 'h', 'e'},                // truncated
	} {
		bp.handOff(peer, len(data))
		bp.framed(b)
		if carried(peer) {
			t.Fatalf("learned from % x", b)
		}
		bp.settle()
	}
	// ChannelData while nothing was handed to pion.
	bp.framed(channelData(0x4001, data))
	if carried(peer) {
		t.Fatal("learned from ChannelData pion was not handed a datagram for")
	}
	// pion frames it.
	bp.handOff(peer, len(data))
	bp.framed(channelData(0x4001, data))
	if !carried(peer) {
		t.Fatal("a peer pion framed as ChannelData was not carried")
	}
	if carried(other) {
		t.Fatal("another peer of the allocation was carried")
	}
	bp.w.flush()
	readChannelData(t, client, 0x4001, data)
	// The client asks for a channel binding: pion decides again.
	bp.rebind()
	if carried(peer) {
		t.Fatal("carried after a ChannelBind request, before pion framed the peer again")
	}
	bp.handOff(peer, len(data))
	bp.framed(channelData(0x4002, data))
	if !carried(peer) {
		t.Fatal("not carried after pion framed the peer again")
	}
	bp.w.flush()
	readChannelData(t, client, 0x4002, data)
	// A ChannelBind request between the hand-off and pion's framing: the
	// framing may predate the new binding.
	bp.handOff(peer, len(data))
	bp.rebind()
	bp.framed(channelData(0x4002, data))
	if carried(peer) {
		t.Fatal("carried on a framing older than the last ChannelBind request")
	}
	bp.handOff(peer, len(data))
	bp.framed(channelData(0x4002, data))
	// pion's word is good for confirm only.
	bp.mu.Lock()
	bp.peers[0].at = time.Now().Add(-bp.confirm)
	bp.mu.Unlock()
	if carried(peer) {
		t.Fatal("carried longer than confirm after pion's last framing")
	}
	bp.handOff(peer, len(data))
	bp.framed(channelData(0x4002, data))
	// A revoked client: taken and dropped, as the filter drops pion's.
	revoked.Store(true)
	if !carried(peer) || bp.w.w.Len() != 0 {
		t.Fatal("a datagram for a revoked client was queued")
	}
	revoked.Store(false)
	// No more than maxBypassPeers peers; the stalest goes.
	for i := range maxBypassPeers + 4 {
		p := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6000 + i}
		bp.handOff(p, len(data))
		bp.framed(channelData(0x4100+uint16(i), data))
	}
	bp.mu.Lock()
	n := len(bp.peers)
	bp.mu.Unlock()
	if n != maxBypassPeers {
		t.Fatalf("%d peers in the bypass, want at most %d", n, maxBypassPeers)
	}
	if carried(peer) {
		t.Fatal("the stalest peer was not replaced")
	}
	if !carried(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6000 + maxBypassPeers + 3}) {
		t.Fatal("the newest peer is not carried")
	}
}

// A ChannelBind request of a client, as the TURN socket reads it, makes
// that client's bypass ask pion again; other messages, other clients and
// garbage do not, and garbage does not panic.
func TestFilterConnSeesChannelBindRequests(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bypass needs batched I/O (Linux)")
	}
	sock, client := udpPair(t)
	_, other := udpPair(t)
	fc := newFilterConn(sock, func(net.Addr) bool { return false }, &flushSet{})
	bp := fc.addClient(client.LocalAddr())
	if bp == nil {
		t.Fatal("no bypass on a batching UDP socket")
	}
	msg := func(m stun.Method, c stun.MessageClass) []byte {
		x, err := stun.Build(stun.TransactionID, stun.NewType(m, c))
		if err != nil {
			t.Fatal(err)
		}
		return x.Raw
	}
	bind := msg(stun.MethodChannelBind, stun.ClassRequest)
	noCookie := append([]byte(nil), bind...)
	noCookie[4] = 0
	buf := make([]byte, 1600)
	for _, x := range []struct {
		from *net.UDPConn
		b    []byte
		gen  uint64
	}{
		{client, nil, 0},
		{client, []byte{0x00}, 0},
		{client, []byte{0x00, 0x09}, 0},
		{client, bind[:19], 0},
		{client, noCookie, 0},
		{client, msg(stun.MethodRefresh, stun.ClassRequest), 0},
		{client, msg(stun.MethodChannelBind, stun.ClassSuccessResponse), 0},
		{client, channelData(0x4001, []byte("data")), 0},
		{other, bind, 0},
		{client, bind, 1},
	} {
		if _, err := x.from.WriteTo(x.b, sock.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := fc.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], x.b) {
			t.Fatalf("read % x, %v; want % x", buf[:n], err, x.b)
		}
		if g := bp.gen.Load(); g != x.gen {
			t.Fatalf("after % x… from %v: %d ChannelBind requests seen, want %d", x.b[:min(len(x.b), 4)], x.from.LocalAddr(), g, x.gen)
		}
	}
	// Short ChannelData to the client neither panics nor teaches.
	bp.handOff(other.LocalAddr(), 0)
	for _, b := range [][]byte{{0x40}, {0x40, 0x01, 0x00}, {0x40, 0x01, 0x00, 0x09}} {
		if _, err := fc.WriteTo(b, client.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if bp.take(nil, other.LocalAddr()) {
		t.Fatal("learned from short ChannelData")
	}
}

// turnDatagram is what a TURN client received: ChannelData (channel > 0)
// or a Data indication (channel 0), with its payload.
type turnDatagram struct {
	channel uint16
	data    []byte
	raw     []byte
}

// recordingSink is a TURN client's socket that records the ChannelData and
// Data indications it receives, in order, and hands every other message to
// pion's client (allocation, permissions, bindings).
type recordingSink struct {
	*net.UDPConn
	got     chan turnDatagram
	dropped atomic.Int64
}

func (s *recordingSink) ReadFrom(b []byte) (int, net.Addr, error) {
	buf := make([]byte, 4096)
	for {
		n, a, err := s.UDPConn.ReadFrom(buf)
		if err != nil {
			return 0, nil, err
		}
		d := append([]byte(nil), buf[:n]...)
		var rec turnDatagram
		switch {
		case n >= 4 && d[0]&0xC0 == 0x40:
			l := int(binary.BigEndian.Uint16(d[2:4]))
			rec = turnDatagram{channel: binary.BigEndian.Uint16(d[:2]), data: d[4:min(4+l, n)], raw: d}
		case stun.IsMessage(d):
			m := &stun.Message{Raw: d}
			if err := m.Decode(); err != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
				return copy(b, d), a, nil
			}
			data, _ := m.Get(stun.AttrData)
			rec = turnDatagram{data: data, raw: d}
		default:
			return copy(b, d), a, nil
		}
		select {
		case s.got <- rec:
		default:
			s.dropped.Add(1)
		}
	}
}

// bypassRig is a relay with a UDP allocation of user-1's dev-1 whose peer
// is a candidate of a live session.
type bypassRig struct {
	f       *fixture
	peer    *net.UDPConn
	sink    *recordingSink
	tc      *turn.Client
	relayed net.PacketConn
	bp      *bypass
	probes  int
	// bindSent is how many 2-byte datagrams bind sent the peer (each
	// reached it).
	bindSent int
}

func newBypassRig(t *testing.T, mut func(*Config)) *bypassRig {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the bypass needs batched I/O (Linux)")
	}
	f := newFixture(t, mut)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	_ = peer.SetWriteBuffer(4 << 20)
	f.session(t, sigwire.Candidate{Type: sigwire.CandHost, Addr: peer.LocalAddr().String()})
	cs, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.SetReadBuffer(4 << 20)
	sink := &recordingSink{UDPConn: cs, got: make(chan turnDatagram, 8192)}
	u, p := deviceCreds("user-1", "dev-1")
	tc, relayed, err := f.turnClientOn(t, sink, u, p)
	if err != nil {
		t.Fatal(err)
	}
	m := f.r.udpTURN.clients.Load()
	if m == nil || (*m)[cs.LocalAddr().(*net.UDPAddr).AddrPort()] == nil {
		t.Fatal("the UDP allocation has no bypass")
	}
	return &bypassRig{f: f, peer: peer, sink: sink, tc: tc, relayed: relayed,
		bp: (*m)[cs.LocalAddr().(*net.UDPAddr).AddrPort()]}
}

// next returns the next datagram the client received.
func (r *bypassRig) next(t *testing.T) turnDatagram {
	t.Helper()
	select {
	case d := <-r.sink.got:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reached the client within 5 s")
		return turnDatagram{}
	}
}

// probe sends one datagram from the peer and returns it as the client
// received it (one probe at a time, so none arrives late).
func (r *bypassRig) probe(t *testing.T) turnDatagram {
	t.Helper()
	r.probes++
	msg := fmt.Sprintf("probe %d", r.probes)
	if _, err := r.peer.WriteTo([]byte(msg), r.relayed.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for {
		if d := r.next(t); string(d.data) == msg {
			return d
		}
	}
}

// bind opens the client's permission and channel to the peer (pion's
// client binds after its first write) and returns the channel number.
func (r *bypassRig) bind(t *testing.T) uint16 {
	t.Helper()
	buf := make([]byte, 64)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := r.relayed.WriteTo([]byte("up"), r.peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		r.bindSent++
		_ = r.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := r.peer.ReadFrom(buf); err != nil {
			t.Fatalf("nothing reached the peer: %v", err)
		}
		if d := r.probe(t); d.channel != 0 {
			return d.channel
		}
	}
	t.Fatal("no channel bound within 10 s")
	return 0
}

func (r *bypassRig) fromPeer(t *testing.T) (bytes, packets float64) {
	t.Helper()
	return counterValue(t, r.f.r.m.bytes.WithLabelValues("from_peer")), counterValue(t, r.f.r.m.packets.WithLabelValues("from_peer"))
}

// Through a running relay, datagrams of every size from a peer with a
// channel reach the client as pion frames them (padded, cut to pion's
// 1,600-byte buffer, empty ones too), in order, mostly through the bypass,
// and count in the relay's metrics as before.
func TestBypassCarriesWhatPionWouldFrame(t *testing.T) {
	r := newBypassRig(t, nil)
	ch := r.bind(t)
	bytes0, pkts0 := r.fromPeer(t)
	taken0 := r.bp.taken.Load()
	sizes := []int{0, 1, 2, 3, 4, 5, 1199, 1200, 1201, 1202, 1452, 1599, 1600, 1601, 2000}
	var want [][]byte
	wantBytes, wantPkts := 0, 0
	for round := range 8 {
		for i, n := range sizes {
			b := bytes.Repeat([]byte{byte(round*len(sizes) + i)}, n)
			if _, err := r.peer.WriteTo(b, r.relayed.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			b = b[:min(n, 1600)]
			want = append(want, b)
			if len(b) > 0 {
				wantBytes += len(b)
				wantPkts++
			}
		}
	}
	for i, w := range want {
		d := r.next(t)
		if d.channel != ch || !bytes.Equal(d.data, w) {
			t.Fatalf("datagram %d: %d bytes on channel %#x, want %d bytes on %#x", i, len(d.data), d.channel, len(w), ch)
		}
		if !bytes.Equal(d.raw, channelData(ch, w)) {
			t.Fatalf("datagram %d: framed as % x…, not as pion frames it", i, d.raw[:4])
		}
	}
	if r.sink.dropped.Load() != 0 {
		t.Fatal("the test client dropped datagrams")
	}
	if taken := r.bp.taken.Load() - taken0; taken < uint64(len(want))/2 {
		t.Fatalf("the bypass carried %d of %d datagrams", taken, len(want))
	}
	b, p := r.fromPeer(t)
	if b-bytes0 != float64(wantBytes) || p-pkts0 != float64(wantPkts) {
		t.Fatalf("from_peer counted %v bytes, %v packets; want %d, %d", b-bytes0, p-pkts0, wantBytes, wantPkts)
	}
}

// A peer with a permission but no channel gets Data indications from pion
// only, and a peer with neither gets nothing: the bypass never learns
// either.
func TestBypassNeverCarriesPeersWithoutChannel(t *testing.T) {
	r := newBypassRig(t, nil)
	if err := r.tc.CreatePermission(r.peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	// Permissions are per IP address: a stranger has another one.
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	for i := range 40 {
		msg := fmt.Sprintf("no channel %d", i)
		if _, err := r.peer.WriteTo([]byte(msg), r.relayed.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if _, err := stranger.WriteTo([]byte("stranger"), r.relayed.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		d := r.next(t)
		if want := fmt.Sprintf("no channel %d", i); d.channel != 0 || string(d.data) != want {
			t.Fatalf("datagram %d: %q on channel %#x, want %q in a Data indication", i, d.data, d.channel, want)
		}
	}
	// The stranger's datagrams were read between the peer's; a last one
	// shows nothing of them came after.
	if d := r.probe(t); d.channel != 0 {
		t.Fatalf("probe on channel %#x without a binding", d.channel)
	}
	if n := r.bp.taken.Load(); n != 0 {
		t.Fatalf("the bypass took %d datagrams of peers without a channel", n)
	}
	r.bp.mu.Lock()
	n := len(r.bp.peers)
	r.bp.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d peers without a channel in the bypass", n)
	}
}

// When pion's channel binding expires, pion sends the peer's next datagram
// it sees as a Data indication and no later datagram of the peer reaches
// the client as ChannelData.
func TestBypassStopsWhenPionDropsTheChannel(t *testing.T) {
	r := newBypassRig(t, func(c *Config) {
		c.channelBindTimeout = 400 * time.Millisecond
		c.bypassConfirm = 50 * time.Millisecond
	})
	ch := r.bind(t)
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for seq := uint32(0); ; seq++ {
			select {
			case <-stop:
				sent <- nil
				return
			case <-tick.C:
			}
			b := binary.BigEndian.AppendUint32(nil, seq)
			if _, err := r.peer.WriteTo(append(b, "stream"...), r.relayed.LocalAddr()); err != nil {
				sent <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-sent; err != nil {
			t.Error(err)
		}
	}()
	lastCD, firstDI := int64(-1), int64(-1)
	dis := 0
	deadline := time.After(15 * time.Second)
	for dis < 20 {
		var d turnDatagram
		select {
		case d = <-r.sink.got:
		case <-deadline:
			t.Fatalf("%d Data indications after 15 s; the channel did not expire", dis)
		}
		if len(d.data) != 10 {
			continue
		}
		seq := int64(binary.BigEndian.Uint32(d.data))
		if d.channel == 0 {
			if firstDI < 0 {
				firstDI = seq
			}
			dis++
			continue
		}
		if d.channel != ch {
			t.Fatalf("datagram %d on channel %#x, want %#x", seq, d.channel, ch)
		}
		lastCD = max(lastCD, seq)
	}
	if lastCD < 0 || r.bp.taken.Load() == 0 {
		t.Fatal("nothing went through the bypass before the channel expired")
	}
	if lastCD > firstDI {
		t.Fatalf("datagram %d reached the client as ChannelData after pion sent %d as a Data indication", lastCD, firstDI)
	}
}

// Revoking the client's device stops what the bypass carries at once, as it
// stops what pion sends; the relay still counts what it read.
func TestBypassHonoursRevocation(t *testing.T) {
	r := newBypassRig(t, func(c *Config) { c.bypassConfirm = time.Hour })
	ch := r.bind(t)
	for i := range 20 {
		msg := fmt.Sprintf("before %d", i)
		if _, err := r.peer.WriteTo([]byte(msg), r.relayed.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if d := r.next(t); d.channel != ch || string(d.data) != msg {
			t.Fatalf("before revocation: %q on %#x", d.data, d.channel)
		}
	}
	taken0 := r.bp.taken.Load()
	if taken0 == 0 {
		t.Fatal("the bypass carried nothing before the revocation")
	}
	r.f.r.SetPolicy(controlapi.RelayPolicy{Revision: 2, Connectors: []controlapi.RelayConnector{{ID: "c1", KeySHA256: r.f.c1Key}},
		RevokedDevices: []string{"dev-1"}})
	_, pkts0 := r.fromPeer(t)
	const after = 50
	for i := range after {
		if _, err := r.peer.WriteTo([]byte(fmt.Sprintf("after %d", i)), r.relayed.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the relay has read them all, and taken them.
	deadline := time.Now().Add(5 * time.Second)
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		_, p := r.fromPeer(t)
		if p-pkts0 == after && r.bp.taken.Load()-taken0 == after {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay read %v and the bypass took %d of %d datagrams within 5 s", p-pkts0, r.bp.taken.Load()-taken0, after)
		}
		<-poll.C
	}
	select {
	case d := <-r.sink.got:
		t.Fatalf("a revoked client got %q", d.data)
	case <-time.After(200 * time.Millisecond):
	}
}
