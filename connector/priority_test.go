package connector

import (
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/bulkyield"
)

// TestBulkWriterDemotesOnce: a flow's stream is demoted once it has sent
// bulkBytes within bulkWindow, and only once; a flow that sends less keeps
// its priority.
func TestBulkWriterDemotesOnce(t *testing.T) {
	demoted := 0
	b := &bulkWriter{w: io.Discard, demote: func() { demoted++ }}
	chunk := make([]byte, 64<<10)
	for i := 0; i < bulkBytes/len(chunk)-1; i++ {
		if _, err := b.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if demoted != 0 {
		t.Fatalf("demoted after %d bytes, below %d", bulkBytes-len(chunk), bulkBytes)
	}
	for i := 0; i < 40; i++ {
		_, _ = b.Write(chunk)
	}
	if demoted != 1 {
		t.Fatalf("demoted %d times, want once", demoted)
	}
	short := &bulkWriter{w: io.Discard, demote: func() { t.Fatal("a short exchange was demoted") }}
	for i := 0; i < 100; i++ {
		_, _ = short.Write(make([]byte, 64))
	}
}

// TestBulkWriterYieldsToInteractive: the answers of a request/response
// flow mark the connector interactive from its bulkyield.Exchanges-th
// exchange on, its requests seen through requests; a flow that opens with
// a short request and answers with a download never does. Once a flow is
// bulk, its writes no longer mark, and each runs the yield first.
func TestBulkWriterYieldsToInteractive(t *testing.T) {
	var inter bulkyield.Marker
	yields := 0
	b := &bulkWriter{w: io.Discard, demote: func() {}, inter: &inter, yield: func() { yields++ }}
	req := b.requests(io.Discard)
	for i := 1; i <= bulkyield.Exchanges; i++ {
		_, _ = req.Write(make([]byte, 64))
		_, _ = b.Write(make([]byte, 64))
		if active := inter.Active(time.Now()); active != (i == bulkyield.Exchanges) || yields != 0 {
			t.Fatalf("after %d exchanges: interactive %v, yields %d", i, active, yields)
		}
	}

	var other bulkyield.Marker
	d := &bulkWriter{w: io.Discard, demote: func() {}, inter: &other, yield: func() { yields++ }}
	_, _ = d.requests(io.Discard).Write(make([]byte, 300)) // GET
	for _, n := range []int{64, 1448, 200, 16 << 10, 3} {
		_, _ = d.Write(make([]byte, n))
	}
	if other.Active(time.Now()) {
		t.Fatal("a request answered by a download marked the connector interactive")
	}
	chunk := make([]byte, 64<<10)
	for i := 0; i < bulkBytes/len(chunk); i++ {
		_, _ = d.Write(chunk)
	}
	if !d.done.Load() || yields != 0 {
		t.Fatalf("after bulkBytes: bulk %v, yields %d; want true, 0", d.done.Load(), yields)
	}
	for i := 0; i < 2*bulkyield.Exchanges; i++ {
		_, _ = d.requests(io.Discard).Write(make([]byte, 64))
		_, _ = d.Write(make([]byte, 64))
	}
	if yields != 2*bulkyield.Exchanges || other.Active(time.Now()) {
		t.Fatalf("bulk writes: yields %d, interactive %v; want %d, false", yields, other.Active(time.Now()), 2*bulkyield.Exchanges)
	}
}

// TestYielder: no yield without a target; a yield waits only while the
// connector is interactive and the connection is queued up.
func TestYielder(t *testing.T) {
	if yielder(new(bulkyield.Marker), 0, nil) != nil {
		t.Fatal("a yield with target 0")
	}
	var inter bulkyield.Marker
	calls, recv := 0, uint64(0)
	queued := true
	stats := func() quic.ConnectionStats {
		calls++
		recv++
		q := time.Duration(0)
		if queued {
			q = 3 * time.Millisecond
		}
		return quic.ConnectionStats{MinRTT: time.Millisecond, LatestRTT: time.Millisecond + q, PacketsReceived: recv}
	}
	y := yielder(&inter, bulkyield.DefaultTarget, stats)
	y()
	if calls != 0 {
		t.Fatal("a bulk download looked at its queue with no interactive flow")
	}
	inter.Mark(time.Now())
	start := time.Now()
	y()
	if calls != bulkyield.Rounds || time.Since(start) < bulkyield.Rounds*bulkyield.Step {
		t.Fatalf("queued up: %d looks in %v, want %d and at least %v", calls, time.Since(start), bulkyield.Rounds, bulkyield.Rounds*bulkyield.Step)
	}
	queued, calls = false, 0
	y()
	if calls != 1 {
		t.Fatalf("a short queue: %d looks, want 1", calls)
	}
}
