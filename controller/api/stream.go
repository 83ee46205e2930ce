// Policy push streams (NDJSON): the client policy (GET
// controlapi.PathClientPolicy, session token), the connector policy (GET
// controlapi.PathConnectorPolicy, mTLS) and the relay policy (GET
// controlapi.PathRelayPolicy, mTLS). Each sends the snapshot first, then a
// full snapshot after every change that alters it, keepalives in between;
// ?rev=N resumes: nothing is sent until the revision moves past N.

package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// Policies feeds the push streams.
type Policies interface {
	// SubscribePolicy returns a channel woken (buffer 1) after every
	// change a stream of its class may see (components: connector and
	// relay streams, else client streams), closed when the controller
	// shuts down; cancel ends the subscription.
	SubscribePolicy(components bool) (wake <-chan struct{}, cancel func())
	// PolicyRevision is the revision of the current model.
	PolicyRevision() int64
	// StreamKeepalive is the interval of the streams' keepalive lines.
	StreamKeepalive() time.Duration
	// ConnectorPolicy is the feed of connector id's stream.
	ConnectorPolicy(id string) PolicyFeed
	// RelayPolicy is the feed of relay id's stream.
	RelayPolicy(id string) PolicyFeed
}

// PolicyFeed computes a stream's snapshot from the current model.
type PolicyFeed func() Snapshot

// Snapshot is one computed push snapshot.
type Snapshot struct {
	// Rev is the revision of the model it was computed from.
	Rev int64
	// Body is the snapshot with its revision field zero; SetRev sets it.
	Body   any
	SetRev func(int64)
	// End, when set, ends the stream with this reason instead.
	End string
}

// streamWriteTimeout bounds each write of a stream line.
const streamWriteTimeout = 30 * time.Second

func (s *Server) streamRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathClientPolicy, s.handleClientPolicy)
	mux.HandleFunc("GET "+controlapi.PathConnectorPolicy, s.Component(adminapi.KindConnector, func(w http.ResponseWriter, r *http.Request, id string) {
		s.stream(w, r, true, s.core.ConnectorPolicy(id))
	}))
	mux.HandleFunc("GET "+controlapi.PathRelayPolicy, s.Component(adminapi.KindRelay, func(w http.ResponseWriter, r *http.Request, id string) {
		s.stream(w, r, true, s.core.RelayPolicy(id))
	}))
}

func (s *Server) handleClientPolicy(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	s.stream(w, r, false, cs.PolicyFeed())
}

// stream serves one push stream of feed.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, components bool, feed PolicyFeed) {
	since := int64(-1)
	if v := r.URL.Query().Get("rev"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			WriteError(w, http.StatusBadRequest, "query parameter rev: %q is not a revision number", v)
			return
		}
		since = n
	}
	wake, cancel := s.core.SubscribePolicy(components)
	defer cancel()
	if since > s.core.PolicyRevision() {
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
	writeLine := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	write := func(v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			s.log.Error("encode push snapshot", "err", err)
			return false
		}
		return writeLine(b)
	}
	keep := time.NewTicker(s.core.StreamKeepalive())
	defer keep.Stop()
	// last is the digest of the last snapshot sent (encoded with rev 0), so
	// an unchanged one is not sent again; a digest, not the body, because
	// every open stream keeps one (docs/scale.md, memory per device).
	var last [sha256.Size]byte
	sent := false
	sentRev := since
	for {
		snap := feed()
		if snap.End != "" {
			write(map[string]string{"error": snap.End})
			return
		}
		if snap.Rev > sentRev {
			body, err := json.Marshal(snap.Body)
			if err != nil {
				s.log.Error("encode push snapshot", "err", err)
				return
			}
			if sum := sha256.Sum256(body); !sent || sum != last {
				if !writeLine(withRev(body, snap)) {
					return
				}
				last, sent = sum, true
			}
			sentRev = snap.Rev
		} else if sent && snap.Rev == sentRev {
			// Woken without a new revision (the controller's replicas
			// changed): send the snapshot again if it differs.
			body, err := json.Marshal(snap.Body)
			if sum := sha256.Sum256(body); err == nil && sum != last {
				if !writeLine(withRev(body, snap)) {
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

// withRev returns the line of snap. Snapshots are encoded once with rev 0
// (to compare them) as body; the revision is patched into that encoding,
// or, for a shape that does not start with it, encoded again.
func withRev(body []byte, snap Snapshot) []byte {
	if bytes.HasPrefix(body, zeroRev) {
		out := make([]byte, 0, len(body)+20)
		out = append(out, `{"rev":`...)
		out = strconv.AppendInt(out, snap.Rev, 10)
		return append(out, body[len(zeroRev)-1:]...)
	}
	snap.SetRev(snap.Rev)
	b, _ := json.Marshal(snap.Body)
	return b
}
