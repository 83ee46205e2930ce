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
// active (a Marker was marked within Recent), a bulk sender waits before
// each write while its connection's queueing delay (the latest RTT sample
// above the minimum) exceeds a target, a little like LEDBAT: the bulk
// transfer keeps the path busy but stops filling its queues. Without
// interactive traffic it runs at full speed.
//
// # Which flows are interactive
//
// A flow is interactive when it behaves like request/response traffic, not
// because it moved a small message: nearly every flow starts with small
// messages (iperf3's 37-byte cookie, a TLS or HTTP request, a protocol
// greeting) before it turns bulk, and a bulk flow's reads and writes come
// back short now and then. Marking the connector interactive on every short
// message kept it interactive while postern-bench's 64-flow cell started,
// whose flows are all bulk, so the flows that had turned bulk yielded
// whenever their connection queued up (the likely cause of 1.35 → 1.12
// Gbit/s on the idle run in docs/datapath-performance.md). A Flow
// therefore classifies one flow from the shape of its traffic:
//
//   - A burst is what one direction moves between two turns (the first
//     bytes in the other direction). A burst below ShortBurst bytes is a
//     message; a burst that reaches it is bulk.
//   - An exchange is a message answered by a message. A flow counts as
//     interactive from the answer of its Exchanges-th exchange in a row on
//     (2·Exchanges−1 turns, each ending a message and each within
//     ExchangeGap of the one before), and from then on while its current
//     burst is still a message, however long it pauses (a shell that was
//     recognised while the user typed stays interactive). A flow's
//     start-up (a greeting, a request, a handshake of one or two round
//     trips) stays below that, a flow that talks in one direction only
//     never turns at all, and a control connection that exchanges a few
//     messages before and after a transfer (iperf3's: three turns before,
//     five after, seconds apart) has no run long enough.
//   - A bulk burst clears the count, and for BulkHold after its last bytes
//     no turn counts: a flow that moved bulk is interactive again only
//     after Exchanges more exchanges, all of them after BulkHold.
//   - Only the messages of an interactive flow mark the Marker, and a Marker
//     expires Recent after its last mark: an interactive flow that falls
//     silent stops making bulk flows yield.
//
// The client classifies a flow on both of its stream directions, the
// connector on its two splice directions; both keep a flow they found bulk
// (bulkBytes within a second) bulk for the rest of its life.
package bulkyield

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

const (
	// ShortBurst: a burst (the bytes one direction of a flow moves
	// between two turns) below this is a message; one that reaches it is
	// bulk. 16 KiB holds a terminal screen, a small API answer or a
	// certificate chain, and is a fraction of a bulk flow's first 100 µs.
	ShortBurst = 16 << 10
	// Exchanges is how many exchanges in a row (a message answered by a
	// message) make a flow interactive. Start-ups observed in the bench
	// (iperf3's data and control connections, a connect-echo-close, a
	// TLS 1.3 handshake with one request) have at most three.
	Exchanges = 4
	// ExchangeGap: turns further apart than this start a new run of
	// exchanges while a flow is not yet interactive. Only a flow whose
	// messages come about as often as Recent gains from yielding.
	ExchangeGap = 500 * time.Millisecond
	// BulkHold is how long after its last bulk bytes a flow's turns do not
	// count toward Exchanges.
	BulkHold = time.Second
	// Recent is how long one mark keeps a Marker active.
	Recent = 100 * time.Millisecond
	// DefaultTarget is the queueing delay a bulk sender leaves on its
	// connection while interactive traffic is active (posternd and
	// postern-connector --bulk-yield-target). In the "under bulk" cell, 9
	// alternating pairs against 250 us at load 0.9-2.3 (2026-12-07): the
	// 64-byte round trip's p99 lower in 9 of 9 (medians 3.8 -> 2.9 ms and
	// 4.6 -> 3.4 ms in two sets), the bulk flow next to it 11-19% slower
	// (1.45 -> 1.29 and 1.14 -> 0.93 Gbit/s); one flow and 64 bulk flows
	// without an interactive one unchanged. 25 us went further (p99 4.1 ->
	// 2.3 ms) at a third of the bulk flow (1.53 -> 0.98). Earlier, at load
	// 6-8: 250 us gave 2.5-3.7 ms and 0.84-1.57 Gbit/s; 500 us 3.7-4.6 ms
	// and 0.93-1.68; no yielding 6.9-10.8 ms and 0.87-1.0.
	DefaultTarget = 100 * time.Microsecond
	// Step is the longest single wait and Rounds the most waits before
	// one write (a 64 KiB write waits at most 8 ms).
	Step   = time.Millisecond
	Rounds = 8
)

// FlagTarget turns a --bulk-yield-target value into the daemons' config
// value, where 0 picks DefaultTarget: a flag of 0 or less means never wait.
func FlagTarget(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// interactiveTurns is the number of turns in a row, each ending a message,
// after which a flow is interactive: the answer of the Exchanges-th
// exchange.
const interactiveTurns = 2*Exchanges - 1

// Marker records when interactive traffic was last seen. The zero value
// has seen none.
type Marker struct{ at atomic.Int64 }

// Mark records interactive traffic at now.
func (m *Marker) Mark(now time.Time) {
	t := now.UnixNano()
	if t-m.at.Load() > int64(time.Millisecond) { // fewer stores on a shared line
		m.at.Store(t)
	}
}

// Last returns the time of m's latest mark (give or take a millisecond),
// zero when it was never marked.
func (m *Marker) Last() time.Time {
	at := m.at.Load()
	if at == 0 {
		return time.Time{}
	}
	return time.Unix(0, at)
}

// Active reports whether m was marked within Recent of now.
func (m *Marker) Active(now time.Time) bool {
	at := m.at.Load()
	return at != 0 && now.UnixNano()-at <= int64(Recent)
}

// Direction is one of a flow's two directions.
type Direction uint8

// The two directions of a flow: Up from the application's client toward
// its server, Down back.
const (
	Up Direction = iota
	Down
)

// Flow classifies the traffic of one flow (see the package doc). The zero
// value has seen nothing; its methods may be called from both directions'
// goroutines at once.
type Flow struct {
	mu    sync.Mutex
	dir   Direction // of the current burst (when burst > 0)
	burst int       // bytes of the current burst, capped at ShortBurst
	turns int       // turns in a row that ended a message, capped
	last  time.Time // of the latest turn
	hold  time.Time // turns do not count before this (bulk moved)
}

// Saw records n bytes the flow moved in direction d at now. It reports
// whether they are interactive traffic, and then marks m (when not nil).
func (f *Flow) Saw(m *Marker, d Direction, n int, now time.Time) bool {
	if n <= 0 {
		return false
	}
	f.mu.Lock()
	if f.burst > 0 && d != f.dir { // a turn
		switch {
		case f.burst >= ShortBurst || now.Before(f.hold):
			f.turns = 0
		case f.turns < interactiveTurns && !f.last.IsZero() && now.Sub(f.last) > ExchangeGap:
			f.turns = 0 // too long since the last turn: a new run
		default:
			f.turns = min(f.turns+1, interactiveTurns)
		}
		f.burst, f.last = 0, now
	}
	f.dir = d
	f.burst = min(f.burst+n, ShortBurst)
	if f.burst >= ShortBurst {
		f.turns = 0
		f.hold = now.Add(BulkHold)
	}
	interactive := f.burst < ShortBurst && f.turns >= interactiveTurns
	f.mu.Unlock()
	if interactive && m != nil {
		m.Mark(now)
	}
	return interactive
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
