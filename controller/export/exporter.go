package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"postern.dev/postern/controller/store"
	"postern.dev/postern/internal/atomicfile"
)

// Source is where events come from (store.Store satisfies it).
type Source interface {
	AuditLog(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error)
	Events(ctx context.Context, after int64, limit int) ([]store.Event, error)
}

// Cursor is a sink's persisted position, per stream. Acked ids were accepted
// by the sink; Sent ids were handed to it (perhaps not accepted): records
// with Acked < id <= Sent are redeliveries.
type Cursor struct {
	AuditAcked   int64 `json:"audit_acked"`
	NetworkAcked int64 `json:"network_acked"`
	AuditSent    int64 `json:"audit_sent"`
	NetworkSent  int64 `json:"network_sent"`
}

// sink delivers a batch; nil means accepted (durably, as far as it can tell).
type sink interface {
	send(ctx context.Context, recs []Record) error
	close() error
}

// Exporter runs one delivery loop per configured sink.
type Exporter struct {
	cfg   Config
	src   Source
	dir   string // cursor directory
	log   *slog.Logger
	sinks []sink
	stats *Stats
}

// Stats counts deliveries (for metrics and tests), by sink name.
type Stats struct {
	mu        sync.Mutex
	Delivered map[string]int64
	Failures  map[string]int64
	// LastOK is when each sink was last caught up or had a batch accepted
	// (alert when it grows stale).
	LastOK map[string]time.Time
}

func (s *Stats) ok(name string) {
	s.mu.Lock()
	s.LastOK[name] = time.Now()
	s.mu.Unlock()
}

// LastOKSnapshot returns a copy of LastOK.
func (s *Stats) LastOKSnapshot() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.LastOK))
	for k, v := range s.LastOK {
		out[k] = v
	}
	return out
}

func (s *Stats) add(m map[string]int64, name string, n int64) {
	s.mu.Lock()
	m[name] += n
	s.mu.Unlock()
}

// Snapshot returns copies of the counters.
func (s *Stats) Snapshot() (delivered, failures map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delivered, failures = map[string]int64{}, map[string]int64{}
	for k, v := range s.Delivered {
		delivered[k] = v
	}
	for k, v := range s.Failures {
		failures[k] = v
	}
	return delivered, failures
}

// New prepares the sinks of cfg (validated by ParseConfig or Validate);
// cursors live in dataDir/export/.
func New(cfg Config, src Source, dataDir string, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, "export")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create export cursor dir: %w", err)
	}
	e := &Exporter{cfg: cfg, src: src, dir: dir, log: log, stats: &Stats{Delivered: map[string]int64{}, Failures: map[string]int64{}, LastOK: map[string]time.Time{}}}
	for i := range cfg.Sinks {
		// A damaged cursor stops the start: guessing a position would
		// lose or repeat events silently.
		if _, err := LoadCursor(dataDir, cfg.Sinks[i].Name); err != nil {
			e.closeSinks()
			return nil, fmt.Errorf("export sink %s: %w (fix or remove the file to export from the oldest kept event)", cfg.Sinks[i].Name, err)
		}
		s, err := openSink(&cfg.Sinks[i])
		if err != nil {
			e.closeSinks()
			return nil, fmt.Errorf("export sink %s: %w", cfg.Sinks[i].Name, err)
		}
		e.sinks = append(e.sinks, s)
	}
	return e, nil
}

func openSink(sc *SinkConfig) (sink, error) {
	switch sc.Type {
	case TypeFile:
		return openFileSink(sc)
	case TypeSyslog:
		return newSyslogSink(sc)
	case TypeWebhook:
		return newWebhookSink(sc)
	}
	return nil, fmt.Errorf("%w: type %q", ErrConfig, sc.Type)
}

// Stats are the exporter's delivery counters.
func (e *Exporter) Stats() *Stats { return e.stats }

func (e *Exporter) closeSinks() {
	for _, s := range e.sinks {
		s.close()
	}
}

// Run delivers until ctx ends, then closes the sinks.
func (e *Exporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range e.sinks {
		wg.Add(1)
		go func() { defer wg.Done(); e.loop(ctx, &e.cfg.Sinks[i], e.sinks[i]) }()
	}
	wg.Wait()
	e.closeSinks()
}

func (e *Exporter) cursorPath(name string) string { return filepath.Join(e.dir, name+".cursor") }

// LoadCursor reads a sink's cursor (zero when none was written yet).
func LoadCursor(dataDir, name string) (Cursor, error) {
	var c Cursor
	p := filepath.Join(dataDir, "export", name+".cursor")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read export cursor: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("export cursor %s: %w", p, err)
	}
	return c, nil
}

func (e *Exporter) saveCursor(name string, c Cursor) error {
	b, _ := json.Marshal(c)
	if err := atomicfile.Write(e.cursorPath(name), b, 0o600); err != nil {
		return fmt.Errorf("save export cursor %s: %w", name, err)
	}
	return nil
}

// next reads the records after the cursor.
func (e *Exporter) next(ctx context.Context, sc *SinkConfig, cur Cursor) ([]Record, error) {
	var audit, network []Record
	if sc.wants(StreamAudit) {
		es, err := e.src.AuditLog(ctx, cur.AuditAcked, e.cfg.Batch)
		if err != nil {
			return nil, err
		}
		for _, a := range es {
			audit = append(audit, auditRecord(a))
		}
	}
	if sc.wants(StreamNetwork) {
		es, err := e.src.Events(ctx, cur.NetworkAcked, e.cfg.Batch)
		if err != nil {
			return nil, err
		}
		for _, n := range es {
			network = append(network, networkRecord(n))
		}
	}
	recs := merge(audit, network)
	for i := range recs {
		r := &recs[i]
		switch r.stream {
		case StreamAudit:
			r.Redelivery = r.seq <= cur.AuditSent
		case StreamNetwork:
			r.Redelivery = r.seq <= cur.NetworkSent
		}
	}
	return recs, nil
}

func advance(cur *Cursor, recs []Record, acked bool) {
	for _, r := range recs {
		a, s := &cur.AuditAcked, &cur.AuditSent
		if r.stream == StreamNetwork {
			a, s = &cur.NetworkAcked, &cur.NetworkSent
		}
		*s = max(*s, r.seq)
		if acked {
			*a = max(*a, r.seq)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (e *Exporter) loop(ctx context.Context, sc *SinkConfig, s sink) {
	log := e.log.With("sink", sc.Name, "type", sc.Type)
	backoff := time.Duration(sc.RetryMin)
	fail := func(what string, err error) bool {
		e.stats.add(e.stats.Failures, sc.Name, 1)
		// Full jitter: a random wait in [backoff/2, backoff].
		d := backoff/2 + rand.N(backoff/2+1)
		log.Warn("export "+what+" failed; retrying", "err", err, "in", d.Round(time.Millisecond))
		backoff = min(2*backoff, time.Duration(sc.RetryMax))
		return sleep(ctx, d)
	}
	for ctx.Err() == nil {
		cur, err := LoadCursor(filepath.Dir(e.dir), sc.Name)
		if err != nil {
			log.Error("export stopped: unreadable cursor", "err", err)
			return
		}
		recs, err := e.next(ctx, sc, cur)
		if err != nil {
			if ctx.Err() != nil || !fail("read", err) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			e.stats.ok(sc.Name)
			if !sleep(ctx, time.Duration(e.cfg.Poll)) {
				return
			}
			continue
		}
		// Record what is handed over before handing it over, so that a
		// crash during the send marks these records as redeliveries.
		advance(&cur, recs, false)
		if err := e.saveCursor(sc.Name, cur); err != nil {
			if !fail("cursor save", err) {
				return
			}
			continue
		}
		if err := s.send(ctx, recs); err != nil {
			if ctx.Err() != nil || !fail("send", err) {
				return
			}
			continue
		}
		advance(&cur, recs, true)
		if err := e.saveCursor(sc.Name, cur); err != nil {
			// The batch will be re-sent, marked as a redelivery.
			if !fail("cursor save", err) {
				return
			}
			continue
		}
		e.stats.add(e.stats.Delivered, sc.Name, int64(len(recs)))
		e.stats.ok(sc.Name)
		backoff = time.Duration(sc.RetryMin)
	}
}
