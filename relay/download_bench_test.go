package relay

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/udpbatch"
)

// chanDataSink is a TURN client's socket that takes ChannelData away from
// pion's client loop: it is counted on got (one token per datagram; a full
// channel drops the token, which the benchmark sees as a loss), everything
// else (STUN) goes to pion. It reads in batches, so the client's share of
// a benchmark stays small.
type chanDataSink struct {
	*net.UDPConn
	rd      *udpbatch.Reader
	got     chan struct{}
	channel atomic.Uint32 // the channel number of the last ChannelData
}

func (s *chanDataSink) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		d, a, err := s.rd.Next()
		if err != nil {
			return 0, nil, err
		}
		if len(d) >= 4 && d[0]&0xC0 == 0x40 {
			s.channel.Store(uint32(d[0])<<8 | uint32(d[1]))
			select {
			case s.got <- struct{}{}:
			default:
			}
			continue
		}
		return copy(b, d), a, nil
	}
}

// relayedBench is a relay in this process with one client allocation whose
// channel to peer is bound: ChannelData flows both ways.
type relayedBench struct {
	f         *fixture
	peer      *net.UDPConn
	client    *net.UDPConn
	sink      *chanDataSink
	relayAddr net.Addr // the allocation's relayed address
	channel   uint16   // the bound channel's number
}

// newRelayedBench allocates for a client whose socket is a chanDataSink and
// round-trips until ChannelData reaches the client (pion's client binds a
// channel soon after the first write).
func newRelayedBench(b *testing.B) *relayedBench {
	f := newFixture(b, nil)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { peer.Close() })
	_ = peer.SetWriteBuffer(4 << 20)
	_ = peer.SetReadBuffer(4 << 20)
	f.session(b, sigwire.Candidate{Type: sigwire.CandHost, Addr: peer.LocalAddr().String()})
	cs, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	_ = cs.SetReadBuffer(4 << 20)
	_ = cs.SetWriteBuffer(4 << 20)
	bio := udpbatch.NewBatchIO(cs)
	if bio == nil {
		cs.Close()
		b.Skip("batched reads are Linux only")
	}
	sink := &chanDataSink{UDPConn: cs, rd: udpbatch.NewReader(bio, 32), got: make(chan struct{}, 4096)}
	u, p := deviceCreds("user-1", "dev-1")
	_, relayed, err := f.turnClientOn(b, sink, u, p)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 2048)
	var relayAddr net.Addr
	deadline := time.Now().Add(10 * time.Second)
	for bound := false; !bound; {
		if time.Now().After(deadline) {
			b.Fatal("no ChannelData reached the client within 10 s")
		}
		if _, err := relayed.WriteTo([]byte("up"), peer.LocalAddr()); err != nil {
			b.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, relayAddr, err = peer.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := peer.WriteTo([]byte("down"), relayAddr); err != nil {
			b.Fatal(err)
		}
		select {
		case <-sink.got:
			bound = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = peer.SetReadDeadline(time.Time{})
	return &relayedBench{f: f, peer: peer, client: cs, sink: sink, relayAddr: relayAddr, channel: uint16(sink.channel.Load())}
}

// BenchmarkRelayToClient measures the relay's side of a relayed download:
// a peer (a connector) sends GSO runs, as quic-go does, to a UDP allocation
// of a relay in this process, which frames each datagram as ChannelData for
// its client. The client reads its socket in batches and only counts
// ChannelData, so the relay's work dominates. One op is one 1,200-byte
// datagram, sent in bursts of 32 and waited for.
func BenchmarkRelayToClient(b *testing.B) {
	rb := newRelayedBench(b)
	peer, sink, relayAddr := rb.peer, rb.sink, rb.relayAddr
	to, ok := udpbatch.AddrPortOf(relayAddr)
	if !ok {
		b.Fatalf("relayed address %v is no UDP address", relayAddr)
	}
	sendBursts(b, udpbatch.NewWriter(peer), bytes.Repeat([]byte{0x5a}, 1200), to, 1200, sink.got)
}

// sendBursts is the timed part of the relay benchmarks: b.N datagrams msg
// to to through w, in bursts of 32, each burst waited for on got (one token
// per datagram that arrived) for up to a second. payload is the bytes an op
// counts. More than 1% lost fails the benchmark.
func sendBursts(b *testing.B, w *udpbatch.Writer, msg []byte, to netip.AddrPort, payload int, got <-chan struct{}) {
	const burst = 32
	lost := 0
	b.SetBytes(int64(payload))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(burst, b.N-done)
		for i := 0; i < n; i++ {
			w.Append(nil, msg, to)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		timeout := time.NewTimer(time.Second)
	wait:
		for i := 0; i < n; i++ {
			select {
			case <-got:
			case <-timeout.C:
				lost += n - i
				break wait
			}
		}
		timeout.Stop()
		done += n
	}
	b.StopTimer()
	if lost > b.N/100 {
		b.Fatalf("%d of %d datagrams lost", lost, b.N)
	}
}
