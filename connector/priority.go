package connector

import (
	"io"
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
// once when they reach bulkBytes within bulkWindow. Before that, its short
// writes (a response) mark the connector interactive (inter); after, it
// runs yield before each write: a bulk download waits while the
// connector's interactive flows are active and its connection is queued up
// (package bulkyield; the client does the same for uploads).
type bulkWriter struct {
	w        io.Writer
	demote   func()
	inter    *bulkyield.Marker // nil: none
	yield    func()            // nil: none
	winStart time.Time
	winBytes int
	done     bool
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
	if b.done && b.yield != nil {
		b.yield()
	}
	n, err := b.w.Write(p)
	if n > 0 && !b.done {
		now := time.Now()
		if b.inter != nil {
			b.inter.Saw(n, now)
		}
		if now.Sub(b.winStart) > bulkWindow {
			b.winStart, b.winBytes = now, 0
		}
		if b.winBytes += n; b.winBytes >= bulkBytes {
			b.done = true
			b.demote()
		}
	}
	return n, err
}
