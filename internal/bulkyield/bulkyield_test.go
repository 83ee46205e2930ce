package bulkyield

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// fakeStats replays connection statistics: queue[i] is the queueing delay
// (LatestRTT above MinRTT) of call i, and fresh[i] whether a packet
// arrived since call i-1. Calls past the end repeat the last entry.
type fakeStats struct {
	queue []time.Duration
	fresh []bool
	calls int
	recv  uint64
}

func (f *fakeStats) stats() quic.ConnectionStats {
	i := min(f.calls, len(f.queue)-1)
	f.calls++
	if f.fresh[i] {
		f.recv++
	}
	const minRTT = 200 * time.Microsecond
	return quic.ConnectionStats{MinRTT: minRTT, LatestRTT: minRTT + f.queue[i], PacketsReceived: f.recv}
}

// TestWait: a bulk write waits while its connection's queue is above the
// target, by the excess (at most Step) each time, and stops as soon as the
// queue is short again, when no packet brought a fresh RTT sample, or
// after Rounds waits.
func TestWait(t *testing.T) {
	const target = 500 * time.Microsecond
	stays := make([]time.Duration, Rounds)
	for i := range stays {
		stays[i] = Step
	}
	ms := time.Millisecond
	cases := []struct {
		what   string
		queue  []time.Duration
		fresh  []bool
		sleeps []time.Duration
	}{
		{"short queue: no wait", []time.Duration{target}, []bool{true}, nil},
		{"long queue until it drains", []time.Duration{3 * ms, 2 * ms, 400 * time.Microsecond}, []bool{true, true, true}, []time.Duration{Step, Step}},
		{"a small excess waits only that long", []time.Duration{target + 100*time.Microsecond, target}, []bool{true, true}, []time.Duration{100 * time.Microsecond}},
		{"stale sample: one wait only", []time.Duration{5 * ms}, []bool{false}, []time.Duration{Step}},
		{"a queue that stays: Rounds waits", []time.Duration{5 * ms}, []bool{true}, stays},
	}
	for _, tc := range cases {
		f := &fakeStats{queue: tc.queue, fresh: tc.fresh}
		var got []time.Duration
		waited := Wait(f.stats, target, func(d time.Duration) { got = append(got, d) })
		var sum time.Duration
		for _, d := range got {
			sum += d
		}
		if len(got) != len(tc.sleeps) || waited != sum {
			t.Errorf("%s: slept %v (reported %v), want %v", tc.what, got, waited, tc.sleeps)
			continue
		}
		for i := range got {
			if got[i] != tc.sleeps[i] {
				t.Errorf("%s: slept %v, want %v", tc.what, got, tc.sleeps)
				break
			}
		}
	}
}

// clock is an injected time that moves only when a test says so.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                    { return c.t }
func (c *clock) advance(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// TestMarker: a mark counts for Recent, and a later one renews it.
func TestMarker(t *testing.T) {
	c := newClock()
	var m Marker
	if m.Active(c.now()) || !m.Last().IsZero() {
		t.Fatal("a fresh marker is active")
	}
	m.Mark(c.now())
	if !m.Last().Equal(c.now()) {
		t.Fatalf("Last %v after a mark at %v", m.Last(), c.now())
	}
	if !m.Active(c.now()) || !m.Active(c.now().Add(Recent)) {
		t.Fatal("a mark did not count for Recent")
	}
	if m.Active(c.now().Add(Recent + time.Millisecond)) {
		t.Fatal("a mark still counted after Recent")
	}
	m.Mark(c.advance(2 * Recent))
	if !m.Active(c.now()) {
		t.Fatal("a later mark did not renew the marker")
	}
}

// exchange runs one request/response exchange of req and resp bytes on f,
// gap apart, and reports whether the answer was interactive.
func exchange(f *Flow, m *Marker, c *clock, req, resp int, gap time.Duration) bool {
	f.Saw(m, Up, req, c.advance(gap))
	return f.Saw(m, Down, resp, c.advance(gap))
}

// TestRequestResponseCounts: a flow of 64-byte exchanges is interactive
// from the answer of its Exchanges-th exchange on, not before, and marks
// the marker only from then; the mark expires Recent after the flow falls
// silent, and its next message marks it again.
func TestRequestResponseCounts(t *testing.T) {
	c := newClock()
	var m Marker
	var f Flow
	for i := 1; i < Exchanges; i++ {
		if exchange(&f, &m, c, 64, 64, 50*time.Microsecond) || m.Active(c.now()) {
			t.Fatalf("interactive after %d exchanges, want %d", i, Exchanges)
		}
	}
	if f.Saw(&m, Up, 64, c.advance(50*time.Microsecond)) {
		t.Fatalf("the request of exchange %d counted before its answer", Exchanges)
	}
	if !f.Saw(&m, Down, 64, c.advance(50*time.Microsecond)) || !m.Active(c.now()) {
		t.Fatalf("not interactive after %d exchanges", Exchanges)
	}
	// An answer in several reads is one message.
	if !f.Saw(&m, Up, 64, c.advance(time.Millisecond)) || !f.Saw(&m, Down, 1000, c.now()) || !f.Saw(&m, Down, 3000, c.now()) {
		t.Fatal("an interactive flow's request or split answer did not count")
	}
	c.advance(Recent + time.Millisecond)
	if m.Active(c.now()) {
		t.Fatal("the marker stayed active after the flow fell silent for Recent")
	}
	// A keystroke after a long pause is still interactive.
	if !exchange(&f, &m, c, 1, 200, 5*time.Second) || !m.Active(c.now()) {
		t.Fatal("an interactive flow's exchange after a pause did not mark")
	}
}

// TestStartupThenBulkNeverInteractive: flows that open with a few short
// messages (a cookie, a greeting, a TLS handshake and a request) and then
// move bulk in either direction, with short reads and writes among the
// bulk ones, never count as interactive.
func TestStartupThenBulkNeverInteractive(t *testing.T) {
	startups := map[string][][2]int{ // {direction, bytes}
		"iperf3 upload":         {{int(Up), 37}},
		"iperf3 download":       {{int(Up), 37}},
		"http":                  {{int(Up), 300}, {int(Down), 400}},
		"smtp-like greeting":    {{int(Down), 80}, {int(Up), 20}, {int(Down), 60}, {int(Up), 30}, {int(Down), 40}},
		"tls 1.3 then request":  {{int(Up), 517}, {int(Down), 5000}, {int(Up), 80}, {int(Up), 300}, {int(Down), 900}, {int(Up), 200}},
		"three short exchanges": {{int(Up), 10}, {int(Down), 10}, {int(Up), 10}, {int(Down), 10}, {int(Up), 10}, {int(Down), 10}},
	}
	chunks := []int{1400, 200, 64 << 10, 512, 9000, 1, 700, 32 << 10}
	for name, start := range startups {
		for _, bulkDir := range []Direction{Up, Down} {
			c := newClock()
			var m Marker
			var f Flow
			for _, msg := range start {
				if f.Saw(&m, Direction(msg[0]), msg[1], c.advance(100*time.Microsecond)) {
					t.Fatalf("%s: its start-up counted as interactive", name)
				}
			}
			for i := 0; i < 2000; i++ {
				d := bulkDir
				n := chunks[i%len(chunks)]
				if i%50 == 49 {
					d, n = 1-bulkDir, 64 // a short message the other way now and then
				}
				if f.Saw(&m, d, n, c.advance(20*time.Microsecond)) || m.Active(c.now()) {
					t.Fatalf("%s, bulk %v: interactive at message %d (%d bytes %v)", name, bulkDir, i, n, d)
				}
			}
		}
	}
}

// TestSlowExchangesDoNotCount: exchanges further apart than ExchangeGap
// do not make a flow interactive (a poll every second gains nothing from
// yielding: a mark lasts Recent), however many there are; a quick run of
// Exchanges does.
func TestSlowExchangesDoNotCount(t *testing.T) {
	c := newClock()
	var m Marker
	var f Flow
	for i := 0; i < 20; i++ {
		f.Saw(&m, Up, 64, c.advance(ExchangeGap+time.Millisecond))
		if f.Saw(&m, Down, 64, c.advance(time.Millisecond)) {
			t.Fatalf("exchange %d, each %v after the last, counted as interactive", i+1, ExchangeGap)
		}
	}
	c.advance(2 * ExchangeGap)
	for i := 1; i <= Exchanges; i++ {
		if got := exchange(&f, &m, c, 64, 64, ExchangeGap/4); got != (i == Exchanges) {
			t.Fatalf("quick exchange %d: interactive %v", i, got)
		}
	}
}

// TestBulkHold: a flow that moved bulk is not interactive again within
// BulkHold however it talks, and after it only from the Exchanges-th
// exchange on; an answer that grows to ShortBurst ends it at once.
func TestBulkHold(t *testing.T) {
	c := newClock()
	var m Marker
	var f Flow
	f.Saw(&m, Up, 100, c.now())
	for i := 0; i < 16; i++ {
		f.Saw(&m, Down, 64<<10, c.advance(100*time.Microsecond))
	}
	bulkEnd := c.now()
	for c.now().Sub(bulkEnd) < BulkHold-10*time.Millisecond {
		if exchange(&f, &m, c, 64, 64, time.Millisecond) {
			t.Fatalf("interactive %v after its bulk bytes, within BulkHold", c.now().Sub(bulkEnd))
		}
	}
	c.advance(10 * time.Millisecond)
	for i := 1; i < Exchanges; i++ {
		if exchange(&f, &m, c, 64, 64, time.Millisecond) {
			t.Fatalf("after BulkHold: interactive after %d exchanges, want %d", i, Exchanges)
		}
	}
	if !exchange(&f, &m, c, 64, 64, time.Millisecond) {
		t.Fatalf("after BulkHold: not interactive after %d exchanges", Exchanges)
	}
	f.Saw(&m, Up, 64, c.advance(time.Millisecond))
	if !f.Saw(&m, Down, ShortBurst/2, c.now()) || f.Saw(&m, Down, ShortBurst/2, c.now()) {
		t.Fatal("an answer growing to ShortBurst did not end the flow's interactive state at once")
	}
	if exchange(&f, &m, c, 64, 64, time.Millisecond) {
		t.Fatal("interactive right after a bulk answer")
	}
}

// TestBulkOnlyCellNoYields replays postern-bench's 64-flow cell (iperf3
// -P 64 and its control connection) and the short-connection cell
// (connect, 64 bytes each way, close) through one marker, the way the
// client and the connector feed it: a bulk flow would yield at no write.
func TestBulkOnlyCellNoYields(t *testing.T) {
	for _, dir := range []Direction{Up, Down} { // upload; -R
		c := newClock()
		var m Marker
		var ctl Flow
		script := [][2]int{{int(Up), 37}, {int(Down), 1}, {int(Up), 4}, {int(Up), 250}, {int(Down), 1}}
		for _, msg := range script { // cookie, PARAM_EXCHANGE, params, CREATE_STREAMS
			ctl.Saw(&m, Direction(msg[0]), msg[1], c.advance(200*time.Microsecond))
		}
		flows := make([]Flow, 64)
		for i := range flows {
			flows[i].Saw(&m, Up, 37, c.advance(50*time.Microsecond)) // its cookie
		}
		ctl.Saw(&m, Down, 1, c.advance(100*time.Microsecond)) // TEST_START
		ctl.Saw(&m, Down, 1, c.now())                         // TEST_RUNNING
		chunks := []int{1448, 200, 16 << 10, 9000, 64 << 10, 3, 1024}
		// At the end of the 1 s test, the control connection's last
		// exchanges (TEST_END, EXCHANGE_RESULTS, both sides' results,
		// DISPLAY_RESULTS, IPERF_DONE) interleave with the flows draining
		// what the tunnel still holds.
		end := [][2]int{{int(Up), 1}, {int(Down), 1}, {int(Up), 4}, {int(Up), 900}, {int(Down), 4}, {int(Down), 900}, {int(Down), 1}, {int(Up), 1}}
		const writes = 64 * 1000
		yields := 0
		for i := 0; i < writes; i++ { // the flows write in turn, 1.3 s in all
			f := &flows[i%64]
			f.Saw(&m, dir, chunks[i%len(chunks)], c.advance(20*time.Microsecond))
			if k := i - (writes - 2000); k >= 0 && k%200 == 0 && k/200 < len(end) {
				msg := end[k/200]
				ctl.Saw(&m, Direction(msg[0]), msg[1], c.now())
			}
			if m.Active(c.now()) {
				yields++
			}
		}
		if yields != 0 {
			t.Errorf("bulk-only cell (%v): %d of %d bulk writes would yield", dir, yields, writes)
		}
	}
	c := newClock()
	var m Marker
	for i := 0; i < 10000; i++ {
		var f Flow
		exchange(&f, &m, c, 64, 64, 20*time.Microsecond)
		if m.Active(c.now()) {
			t.Fatalf("short connection %d marked the connector interactive", i)
		}
	}
}

// TestFlowConcurrent: both directions may feed one Flow at once.
func TestFlowConcurrent(t *testing.T) {
	var m Marker
	var f Flow
	now := time.Now()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ {
			f.Saw(&m, Up, 64, now)
		}
		close(done)
	}()
	for i := 0; i < 10000; i++ {
		f.Saw(&m, Down, 64, now)
	}
	<-done
	if f.turns > interactiveTurns || f.burst > ShortBurst {
		t.Fatalf("counters out of range: turns %d, burst %d", f.turns, f.burst)
	}
}

// TestFlagTarget: --bulk-yield-target 0 (or less) turns yielding off, which
// the daemons' configs spell as a negative target (their 0 is the default).
func TestFlagTarget(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{DefaultTarget, DefaultTarget},
		{250 * time.Microsecond, 250 * time.Microsecond},
		{0, -1},
		{-time.Millisecond, -1},
	} {
		if got := FlagTarget(c.in); got != c.want {
			t.Errorf("FlagTarget(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
