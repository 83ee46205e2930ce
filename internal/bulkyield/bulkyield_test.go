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

// TestMarker: only a short message counts, and it counts for Recent.
func TestMarker(t *testing.T) {
	now := time.Now()
	var m Marker
	if m.Active(now) {
		t.Fatal("a fresh marker is active")
	}
	m.Saw(0, now)
	m.Saw(ShortMessage, now)
	if m.Active(now) {
		t.Fatal("an empty read or a message of ShortMessage bytes counted as interactive")
	}
	m.Saw(64, now)
	if !m.Active(now) || !m.Active(now.Add(Recent)) {
		t.Fatal("a 64-byte message did not count for Recent")
	}
	if m.Active(now.Add(Recent + time.Millisecond)) {
		t.Fatal("a 64-byte message still counted after Recent")
	}
	m.Saw(64, now.Add(2*Recent))
	if !m.Active(now.Add(2 * Recent)) {
		t.Fatal("a later message did not renew the marker")
	}
}
