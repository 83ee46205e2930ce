// Package bulkyield lets a bulk sender yield to interactive traffic.
//
// The client and the connector keep bulk flows and short request/response
// flows on different QUIC connections, but those connections share the
// processes' CPU, the UDP sockets and the TUN device. Measured in
// postern-bench's "under bulk" cell (packet timestamps on the client's TUN,
// its UDP link and the connector host's loopback), a 64-byte round trip next
// to a bulk upload waited on every leg, both ways, including legs the bulk
// data never takes, and the connector's UDP receive queue held up to ~550 KB
// of bulk packets in front of the request: the bulk flow's queues and CPU
// use are what delay the interactive one. So while interactive traffic is
// active (a Marker saw a short message within Recent), a bulk sender waits
// before each write while its connection's queueing delay (the latest RTT
// sample above the minimum) exceeds a target, a little like LEDBAT: the
// bulk transfer keeps the path busy but stops filling its queues. Without
// interactive traffic it runs at full speed.
package bulkyield

import (
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

const (
	// ShortMessage: a read or write of fewer bytes by a flow that is not
	// bulk is interactive traffic.
	ShortMessage = 1 << 10
	// Recent is how long one short message makes bulk senders yield.
	Recent = 100 * time.Millisecond
	// DefaultTarget is the queueing delay a bulk sender leaves on its
	// connection while interactive traffic is active. In the "under bulk"
	// cell (same runs, load 6-8) 250 us with 8 rounds gave a 64-byte round
	// trip p99 of 2.5-3.7 ms and bulk 0.84-1.57 Gbit/s; 500 us with 4
	// rounds 3.7-4.6 ms and 0.93-1.68; no yielding 6.9-10.8 ms and
	// 0.87-1.0.
	DefaultTarget = 250 * time.Microsecond
	// Step is the longest single wait and Rounds the most waits before
	// one write (a 64 KiB write waits at most 8 ms).
	Step   = time.Millisecond
	Rounds = 8
)

// Marker records when interactive traffic was last seen. The zero value
// has seen none.
type Marker struct{ at atomic.Int64 }

// Saw records a read or write of n bytes by a flow that is not bulk at now;
// only a short message counts.
func (m *Marker) Saw(n int, now time.Time) {
	if n <= 0 || n >= ShortMessage {
		return
	}
	t := now.UnixNano()
	if t-m.at.Load() > int64(time.Millisecond) { // fewer stores on a shared line
		m.at.Store(t)
	}
}

// Active reports whether a short message was seen within Recent of now.
func (m *Marker) Active(now time.Time) bool {
	at := m.at.Load()
	return at != 0 && now.UnixNano()-at <= int64(Recent)
}

// Wait waits while the queueing delay stats reports (LatestRTT above
// MinRTT) exceeds target, by the excess but at most Step each time and at
// most Rounds times, and only as long as packets keep arriving: without a
// new packet the RTT sample is stale and says nothing about the queue now.
// It returns the time it waited.
func Wait(stats func() quic.ConnectionStats, target time.Duration, sleep func(time.Duration)) time.Duration {
	var waited time.Duration
	var last uint64
	for i := 0; i < Rounds; i++ {
		st := stats()
		q := st.LatestRTT - st.MinRTT
		if q <= target || (i > 0 && st.PacketsReceived == last) {
			break
		}
		last = st.PacketsReceived
		d := min(q-target, Step)
		sleep(d)
		waited += d
	}
	return waited
}
