package controller

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"postern.dev/postern/controller/api"
)

// hub wakes push-stream subscribers after every model change. Each
// subscriber computes its own snapshot from the new model.
type hub struct {
	mu     sync.Mutex
	subs   map[chan struct{}]subClass
	closed bool
}

// subClass tells client streams (devices, the many) from component streams
// (connectors and relays), so that a change only components can see wakes
// only them.
type subClass int

const (
	subClient subClass = iota
	subComponent
)

func newHub() *hub { return &hub{subs: map[chan struct{}]subClass{}} }

func (h *hub) subscribe(class subClass) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	h.subs[ch] = class
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

// notify wakes every subscriber.
func (h *hub) notify() { h.wake(func(subClass) bool { return true }) }

// notifyComponents wakes connector and relay streams only.
func (h *hub) notifyComponents() { h.wake(func(c subClass) bool { return c == subComponent }) }

func (h *hub) wake(which func(subClass) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch, class := range h.subs {
		if !which(class) {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		close(ch)
	}
	h.subs = map[chan struct{}]subClass{}
}

// snapshotFunc computes a subscriber's snapshot from m with its revision
// left zero; ok false ends the stream with reason.
type snapshotFunc func(m *Model) (snap any, setRev func(int64), ok bool, reason string)

// stream serves one NDJSON push stream: the snapshot first, then a full
// snapshot after every change that alters it, keepalives in between. With
// ?rev=N nothing is sent until the revision moves past N.
func (c *Controller) stream(w http.ResponseWriter, r *http.Request, class subClass, snapshot snapshotFunc) {
	since := int64(-1)
	if v := r.URL.Query().Get("rev"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			api.WriteError(w, http.StatusBadRequest, "query parameter rev: %q is not a revision number", v)
			return
		}
		since = n
	}
	wake, cancel := c.hub.subscribe(class)
	defer cancel()
	if since > c.model().Rev {
		// A revision from the future (the controller's store was replaced):
		// the caller's copy is unrelated, so it gets a snapshot at once.
		since = -1
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Send the headers now: a resumed stream may have nothing to say for a while.
	if err := rc.Flush(); err != nil {
		return
	}
	write := func(v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			c.log.Error("encode push snapshot", "err", err)
			return false
		}
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	writeLine := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	keep := time.NewTicker(c.cfg.KeepaliveInterval)
	defer keep.Stop()
	// last is the digest of the last snapshot sent (encoded with rev 0), so
	// an unchanged one is not sent again; a digest, not the body, because
	// every open stream keeps one (docs/scale.md, memory per device).
	var last [sha256.Size]byte
	sent := false
	sentRev := since
	for {
		m := c.model()
		snap, setRev, ok, reason := snapshot(m)
		if !ok {
			write(map[string]string{"error": reason})
			return
		}
		if m.Rev > sentRev {
			body, err := json.Marshal(snap)
			if err != nil {
				c.log.Error("encode push snapshot", "err", err)
				return
			}
			if sum := sha256.Sum256(body); !sent || sum != last {
				if !writeLine(withRev(body, m.Rev, snap, setRev)) {
					return
				}
				last, sent = sum, true
			}
			sentRev = m.Rev
		} else if sent && m.Rev == sentRev {
			// Woken without a new revision (the controller's replicas
			// changed): send the snapshot again if it differs.
			body, err := json.Marshal(snap)
			if sum := sha256.Sum256(body); err == nil && sum != last {
				if !writeLine(withRev(body, m.Rev, snap, setRev)) {
					return
				}
				last = sum
			}
		}
		select {
		case <-r.Context().Done():
			return
		case _, open := <-wake:
			if !open {
				return
			}
		case <-keep.C:
			if !write(map[string]bool{"keepalive": true}) {
				return
			}
		}
	}
}

var zeroRev = []byte(`{"rev":0,`)

// withRev returns the snapshot line for revision rev. Snapshots are encoded
// once with rev 0 (to compare them); the revision is patched into that
// encoding, or, for a shape that does not start with it, encoded again.
func withRev(body []byte, rev int64, snap any, setRev func(int64)) []byte {
	if bytes.HasPrefix(body, zeroRev) {
		out := make([]byte, 0, len(body)+20)
		out = append(out, `{"rev":`...)
		out = strconv.AppendInt(out, rev, 10)
		return append(out, body[len(zeroRev)-1:]...)
	}
	setRev(rev)
	b, _ := json.Marshal(snap)
	return b
}
