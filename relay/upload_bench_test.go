package relay

import (
	"encoding/binary"
	"testing"
	"time"

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
	got := make(chan int, 4096)
	go func() {
		rd := udpbatch.NewReader(bio, 32)
		for {
			d, _, err := rd.Next()
			if err != nil {
				close(got)
				return
			}
			select {
			case got <- len(d):
			default:
			}
		}
	}()
	const size = 1200
	msg := make([]byte, 4+size)
	binary.BigEndian.PutUint16(msg, rb.channel)
	binary.BigEndian.PutUint16(msg[2:], size)
	w := udpbatch.NewWriter(rb.client)
	const burst = 32
	lost := 0
	b.SetBytes(size)
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
			case l := <-got:
				if l != size {
					b.Fatalf("peer got %d bytes, want %d", l, size)
				}
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
