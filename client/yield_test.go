package client

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/bulkyield"
)

// TestShouldYield: only a bulk flow yields, only while a flow of its
// connector moved a short message recently, and never with yielding
// turned off.
func TestShouldYield(t *testing.T) {
	now := time.Now()
	p := &pool{bulkTarget: bulkyield.DefaultTarget}
	e := &connEntry{}
	if p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow yielded with no interactive flow ever seen")
	}
	e.interactive.Mark(now.Add(-bulkyield.Recent / 2))
	if !p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow did not yield to a recent interactive message")
	}
	if p.shouldYield(e, flowInteractive, now) || p.shouldYield(e, flowDone, now) {
		t.Error("a flow that is not bulk yielded")
	}
	if p.shouldYield(e, flowBulk, now.Add(bulkyield.Recent)) {
		t.Error("a bulk flow still yielded Recent after the last interactive message")
	}
	p.bulkTarget = 0
	if p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow yielded with yielding turned off")
	}
}

// TestOnlyRequestResponseMarksInteractive: a flow that opens with short
// messages and then moves bulk (iperf3's data connections) never marks its
// connector interactive, nor does a connect-echo-close; a flow of short
// exchanges marks it from its bulkyield.Exchanges-th answer on, and a bulk
// flow's short messages never do.
func TestOnlyRequestResponseMarksInteractive(t *testing.T) {
	p := &pool{streams: map[*quic.Conn]int{}, bulk: map[*quic.Conn]int{}}
	newFlow := func(e *connEntry) *flow {
		f := &flow{e: e, p: p, conn: new(quic.Conn)}
		return f
	}
	e := &connEntry{}
	up := newFlow(e)
	up.account(bulkyield.Up, 37) // iperf3's cookie
	for _, n := range []int{1448, 200, smallCopyBuf, 700, 16 << 10, 64} {
		up.account(bulkyield.Up, n)
		if e.interactive.Active(time.Now()) {
			t.Fatalf("a flow opening with a short message, then moving %d bytes, marked the connector interactive", n)
		}
	}
	short := newFlow(e)
	short.account(bulkyield.Up, 64)
	short.account(bulkyield.Down, 64)
	if e.interactive.Active(time.Now()) {
		t.Fatal("a connect-echo-close marked the connector interactive")
	}

	rr := newFlow(e)
	for i := 1; i <= bulkyield.Exchanges; i++ {
		rr.account(bulkyield.Up, 64)
		rr.account(bulkyield.Down, 64)
		if active := e.interactive.Active(time.Now()); active != (i == bulkyield.Exchanges) {
			t.Fatalf("after %d exchanges of 64 bytes: interactive %v", i, active)
		}
	}

	other := &connEntry{}
	bulk := newFlow(other)
	bulk.bulk.Store(flowBulk)
	for i := 0; i < 2*bulkyield.Exchanges; i++ {
		bulk.account(bulkyield.Up, 64)
		bulk.account(bulkyield.Down, 64)
	}
	if other.interactive.Active(time.Now()) {
		t.Fatal("a bulk flow's short exchanges marked the connector interactive")
	}
}
