package client

import (
	"context"
	"fmt"
	"io"
	"sync"
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
	for _, off := range []time.Duration{0, bulkyield.FlagTarget(0)} { // posternd --bulk-yield-target 0
		p.bulkTarget = off
		if p.shouldYield(e, flowBulk, now) {
			t.Errorf("a bulk flow yielded with yielding turned off (target %v)", off)
		}
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

// TestBulkFlowsDoNotMarkInteractive runs flows through a connector the way
// iperf3's data connections do (a 37-byte cookie, then 2 MiB each, echoed
// back): the connector entry is never marked interactive, so they never
// yield to each other. A flow of 64-byte round trips then marks it.
func TestBulkFlowsDoNotMarkInteractive(t *testing.T) {
	s := newSpreadLab(t, 0)
	s.warm(t)
	p := s.d.currentPool()
	p.mu.RLock()
	var e *connEntry
	for _, x := range p.entries {
		e = x
	}
	p.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const flows, each = 8, 2 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*flows)
	for i := 0; i < flows; i++ {
		c, err := s.d.DialTCP(ctx, "127.0.0.1", s.port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := c.Write(make([]byte, 37)); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 64<<10)
			for sent := 37; sent < each; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := io.CopyN(io.Discard, c, each); err != nil {
				errs <- fmt.Errorf("read the echo: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if at := e.interactive.Last(); !at.IsZero() {
		t.Fatalf("bulk flows marked their connector interactive (last at %v)", at)
	}

	rr := s.dial(t) // one exchange
	for i := 1; i < bulkyield.Exchanges; i++ {
		echo(t, rr, make([]byte, 64))
	}
	if !e.interactive.Active(time.Now()) {
		t.Fatalf("%d exchanges of 64 bytes did not mark the connector interactive", bulkyield.Exchanges)
	}
}
