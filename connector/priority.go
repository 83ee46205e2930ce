package connector

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/bulkyield"
)

// Send priority of bulk flows. quic-go schedules the STREAM frames of a
// connection by urgency (0 first, 7 last; 3 by default), round-robin among
// streams of one urgency. A flow that sends bulkBytes within bulkWindow
// toward the client drops to bulkUrgency, so the frames of short
// request/response flows on the same connection go out ahead of the bulk
// data queued for sending (the client does the same for uploads,
// client/spread.go).
const (
	bulkBytes   = 1 << 20
	bulkWindow  = time.Second
	bulkUrgency = 5
)

// bulkWriter counts the bytes written to a flow's stream and calls demote
// once when they reach bulkBytes within bulkWindow. Before that, it
// classifies the flow from both directions (cls; the requests direction
// through requests): the answers of a request/response flow mark the
// connector interactive (inter). After, it runs yield before each write: a
// bulk download waits while the connector's interactive flows are active
// and its connection is queued up (package bulkyield; the client does the
// same for uploads).
type bulkWriter struct {
	w        io.Writer
	demote   func()
	inter    *bulkyield.Marker // nil: none
	yield    func()            // nil: none
	cls      bulkyield.Flow
	winStart time.Time
	winBytes int
	done     atomic.Bool // bulk: no longer classified
}

// newBulkWriter writes to st, a stream of conn; inter is the connector's
// marker of interactive traffic, target the queueing delay a bulk download
// leaves while it is active (0: it never yields).
func newBulkWriter(st *quic.Stream, conn *quic.Conn, inter *bulkyield.Marker, target time.Duration) *bulkWriter {
	return &bulkWriter{w: st, demote: func() { st.SetPriority(bulkUrgency, true) }, inter: inter,
		yield: yielder(inter, target, conn.ConnectionStats)}
}

// yielder is a bulk download's wait before a write: while inter is active,
// until the connection's queueing delay (stats) is down to target. It is
// nil for target 0.
func yielder(inter *bulkyield.Marker, target time.Duration, stats func() quic.ConnectionStats) func() {
	if target <= 0 {
		return nil
	}
	return func() {
		if inter.Active(time.Now()) {
			bulkyield.Wait(stats, target, time.Sleep)
		}
	}
}

func (b *bulkWriter) Write(p []byte) (int, error) {
	done := b.done.Load()
	if done && b.yield != nil {
		b.yield()
	}
	n, err := b.w.Write(p)
	if n > 0 && !done {
		now := time.Now()
		b.cls.Saw(b.inter, bulkyield.Down, n, now)
		if now.Sub(b.winStart) > bulkWindow {
			b.winStart, b.winBytes = now, 0
		}
		if b.winBytes += n; b.winBytes >= bulkBytes {
			b.done.Store(true)
			b.demote()
		}
	}
	return n, err
}

// requests wraps w, the flow's writer toward its destination, so that the
// flow's requests are classified with its answers.
func (b *bulkWriter) requests(w io.Writer) io.Writer { return requestWriter{w: w, b: b} }

type requestWriter struct {
	w io.Writer
	b *bulkWriter
}

func (r requestWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if n > 0 && !r.b.done.Load() {
		r.b.cls.Saw(r.b.inter, bulkyield.Up, n, time.Now())
	}
	return n, err
}
