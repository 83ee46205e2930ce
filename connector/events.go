package connector

import (
	"sync"

	"postern.dev/postern/controlapi"
)

const (
	eventBatch    = 256
	maxQueuedEvts = 50000 // bound while the controller is unreachable
)

// eventQueue buffers flow events until they reach the controller.
type eventQueue struct {
	connectorID string
	mu          sync.Mutex
	q           []controlapi.FlowEvent
	dropped     int64
	full        chan struct{}
}

func newEventQueue(id string) *eventQueue {
	return &eventQueue{connectorID: id, full: make(chan struct{}, 1)}
}

func (e *eventQueue) add(ev controlapi.FlowEvent) {
	ev.ConnectorID = e.connectorID
	e.mu.Lock()
	if len(e.q) >= maxQueuedEvts {
		// Keep the newest: drop the oldest.
		e.q = e.q[1:]
		e.dropped++
	}
	e.q = append(e.q, ev)
	n := len(e.q)
	e.mu.Unlock()
	if n >= eventBatch {
		select {
		case e.full <- struct{}{}:
		default:
		}
	}
}

func (e *eventQueue) take(n int) []controlapi.FlowEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n > len(e.q) {
		n = len(e.q)
	}
	out := append([]controlapi.FlowEvent(nil), e.q[:n]...)
	e.q = append(e.q[:0:0], e.q[n:]...)
	return out
}

func (e *eventQueue) putBack(evs []controlapi.FlowEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.q = append(append([]controlapi.FlowEvent(nil), evs...), e.q...)
	if over := len(e.q) - maxQueuedEvts; over > 0 {
		e.q = e.q[over:]
		e.dropped += int64(over)
	}
}

func (e *eventQueue) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.q)
}
