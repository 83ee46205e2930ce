package connector

import (
	"io"
	"time"

	"github.com/quic-go/quic-go"
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
// once when they reach bulkBytes within bulkWindow.
type bulkWriter struct {
	w        io.Writer
	demote   func()
	winStart time.Time
	winBytes int
	done     bool
}

func newBulkWriter(st *quic.Stream) *bulkWriter {
	return &bulkWriter{w: st, demote: func() { st.SetPriority(bulkUrgency, true) }}
}

func (b *bulkWriter) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if n > 0 && !b.done {
		now := time.Now()
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
