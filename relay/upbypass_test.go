package relay

import (
	"bytes"
	"net"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

// The way up learns only from pion's own write of the payload of the
// ChannelData it was handed last, of that payload's length; it forgets a
// hand-off when the read loop reads again; a ChannelBind request (gen)
// sends every channel through pion again; and only what it learned within
// confirm is carried.
func TestUpBypassLearnsOnlyFromPionsWrite(t *testing.T) {
	sock, client := udpPair(t)
	peerConn, _ := udpPair(t)
	bp := newBypass(client.LocalAddr(), newBatchWriter(sock), func(net.Addr) bool { return false }, time.Hour)
	alloc := &countingConn{PacketConn: peerConn, bp: bp, wr: newBatchWriter(peerConn), g: &countingGenerator{flush: &flushSet{}}}
	peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	cd := channelData(0x4001, []byte("hello"))
	if bp.carryUp(cd) {
		t.Fatal("a channel pion never wrote for was carried")
	}
	// Handed off, then the read loop read again before pion wrote.
	bp.upHandOff(cd)
	bp.upSettle()
	bp.upWritten(5, peer, alloc)
	if bp.carryUp(cd) {
		t.Fatal("learned from a write after the hand-off ended")
	}
	// pion wrote something of another length (not this payload).
	bp.upHandOff(cd)
	bp.upWritten(4, peer, alloc)
	if bp.carryUp(cd) {
		t.Fatal("learned from a write of another length")
	}
	// Malformed ChannelData is never handed off as such, nor carried.
	for _, d := range [][]byte{nil, {0x40}, {0x40, 0x01, 0x00, 0x09, 'x'}, {0x01, 0x01, 0x00, 0x01, 'x'}} {
		bp.upHandOff(d)
		bp.upWritten(len(d)-4, peer, alloc)
		if bp.carryUp(d) {
			t.Fatalf("malformed % x carried", d)
		}
	}
	// pion's write of the payload teaches the channel.
	bp.upHandOff(cd)
	bp.upWritten(5, peer, alloc)
	if !bp.carryUp(cd) || !bp.carryUp(channelData(0x4001, []byte("another length"))) {
		t.Fatal("the channel pion wrote for was not carried")
	}
	if bp.carryUp(channelData(0x4002, []byte("hello"))) {
		t.Fatal("another channel was carried")
	}
	// A ChannelBind request voids it until pion writes again.
	bp.rebind()
	if bp.carryUp(cd) {
		t.Fatal("carried after a ChannelBind request")
	}
	bp.upHandOff(cd)
	bp.upWritten(5, peer, alloc)
	if !bp.carryUp(cd) {
		t.Fatal("not carried after pion wrote again")
	}
	// confirm passes.
	bp.confirm = 0
	if bp.carryUp(cd) {
		t.Fatal("carried after confirm passed")
	}
}

// Through a running relay, every datagram the client sends on its channel
// reaches the peer intact and in order, mostly past pion, and counts in the
// relay's metrics as before; after a ChannelBind request the next one goes
// through pion; ChannelData on a channel pion does not have reaches no one
// and teaches nothing.
func TestUpBypassCarriesWhatPionWouldWrite(t *testing.T) {
	r := newBypassRig(t, nil)
	toPeer := func() (float64, float64) {
		return counterValue(t, r.f.r.m.bytes.WithLabelValues("to_peer")), counterValue(t, r.f.r.m.packets.WithLabelValues("to_peer"))
	}
	bytes0, pkts0 := toPeer()
	r.bind(t)
	buf := make([]byte, 4096)
	recv := func(want []byte) {
		t.Helper()
		_ = r.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := r.peer.ReadFrom(buf)
		if err != nil {
			t.Fatalf("nothing reached the peer: %v", err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("peer got %d bytes % x…, want %d bytes % x…", n, buf[:min(n, 8)], len(want), want[:min(len(want), 8)])
		}
	}
	send := func(b []byte) {
		t.Helper()
		if _, err := r.relayed.WriteTo(b, r.peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// The relay counts a datagram just after the kernel took it, so the
	// peer may read bind's last one before it counts: start once bind's
	// datagrams are all counted.
	bytes0, pkts0 = bytes0+2*float64(r.bindSent), pkts0+float64(r.bindSent)
	testenv.Eventually(t, 5*time.Second, "to_peer to count bind's datagrams", func() bool {
		b, p := toPeer()
		return b == bytes0 && p == pkts0
	})
	carried0 := r.bp.up.carried.Load()
	sizes := []int{1, 2, 3, 4, 5, 100, 1199, 1200, 1201, 1452}
	var want [][]byte
	wantBytes := 0
	for round := range 8 {
		for i, n := range sizes {
			b := bytes.Repeat([]byte{byte(round*len(sizes) + i)}, n)
			send(b)
			want = append(want, b)
			wantBytes += n
		}
		for _, w := range want[len(want)-len(sizes):] {
			recv(w)
		}
	}
	if c := r.bp.up.carried.Load() - carried0; c < uint64(len(want))/2 {
		t.Fatalf("the bypass carried %d of %d datagrams", c, len(want))
	}
	testenv.Eventually(t, 5*time.Second, "to_peer counting what the peer got", func() bool {
		b, p := toPeer()
		return b-bytes0 == float64(wantBytes) && p-pkts0 == float64(len(want))
	})

	// A ChannelBind request of the client: the next datagram goes through
	// pion, the one after past it again.
	r.bp.rebind()
	c := r.bp.up.carried.Load()
	send([]byte("after bind"))
	recv([]byte("after bind"))
	if r.bp.up.carried.Load() != c {
		t.Fatal("carried right after a ChannelBind request")
	}
	send([]byte("again"))
	recv([]byte("again"))
	if r.bp.up.carried.Load() != c+1 {
		t.Fatal("not carried after pion wrote again")
	}

	// ChannelData on a channel pion never bound, straight from the
	// client's socket: dropped by pion, carried by no one.
	c = r.bp.up.carried.Load()
	if _, err := r.sink.UDPConn.WriteTo(channelData(0x4ffe, []byte("stray")), r.f.r.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	send([]byte("after stray"))
	recv([]byte("after stray"))
	if r.bp.up.carried.Load() != c+1 {
		t.Fatal("the stray channel changed what was carried")
	}
}

// A revoked client's datagrams reach no peer, carried or not.
func TestUpBypassHonoursRevocation(t *testing.T) {
	r := newBypassRig(t, func(c *Config) { c.bypassConfirm = time.Hour })
	r.bind(t)
	for i := range 4 { // learned
		if _, err := r.relayed.WriteTo([]byte{byte(i)}, r.peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for range 4 {
		_ = r.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := r.peer.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	r.f.r.SetPolicy(controlapi.RelayPolicy{Revision: 2, Connectors: []controlapi.RelayConnector{{ID: "c1", KeySHA256: r.f.c1Key}},
		RevokedDevices: []string{"dev-1"}})
	if _, err := r.relayed.WriteTo([]byte("after revocation"), r.peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = r.peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := r.peer.ReadFrom(buf); err == nil {
		t.Fatalf("a revoked client's datagram reached the peer: %q", buf[:n])
	}
}
