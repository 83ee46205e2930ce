package relay

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"postern.dev/postern/traversal/udpbatch"
)

// BenchmarkClientToRelay measures the relay's side of a relayed upload: the
// client sends ChannelData on its bound channel in GSO runs (as the client's
// TURN fast path does), the relay hands each datagram's data to pion, which
// sends it from the allocation to the peer. The peer reads in batches and
// only counts. One op is one 1,200-byte datagram, sent in bursts of 32 and
// waited for.
func BenchmarkClientToRelay(b *testing.B) {
	rb := newRelayedBench(b)
	to, ok := udpbatch.AddrPortOf(rb.f.r.UDPAddr())
	if !ok {
		b.Fatal("the relay's UDP address is no UDP address")
	}
	bio := udpbatch.NewBatchIO(rb.peer)
	if bio == nil {
		b.Skip("batched reads are Linux only")
	}
	// The peer counts datagrams of the sent size; any other size is a
	// framing error of the relay and never counts.
	const size = 1200
	got := make(chan struct{}, 4096)
	var wrong atomic.Int64
	go func() {
		rd := udpbatch.NewReader(bio, 32)
		for {
			d, _, err := rd.Next()
			if err != nil {
				return
			}
			if len(d) != size {
				wrong.Add(1)
				continue
			}
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}()
	msg := make([]byte, 4+size)
	binary.BigEndian.PutUint16(msg, rb.channel)
	binary.BigEndian.PutUint16(msg[2:], size)
	sendBursts(b, udpbatch.NewWriter(rb.client), msg, to, size, got)
	if n := wrong.Load(); n > 0 {
		b.Fatalf("the peer got %d datagrams of another size than %d", n, size)
	}
}
