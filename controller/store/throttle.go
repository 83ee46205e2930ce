package store

import (
	"context"
	"fmt"
	"time"
)

// ThrottleEntry is the sign-in throttle's state of one key (see
// controller/lockout.go): failures counted, the time before which attempts
// wait, and the last failure.
type ThrottleEntry struct {
	Fails int
	Until time.Time
	Last  time.Time
}

// Throttle is implemented by backends whose sign-in throttling state is
// shared by several controller replicas, so that a guesser gains nothing by
// spreading attempts over them.
type Throttle interface {
	// ThrottleView returns the entries of keys whose last failure is after
	// since (others are absent).
	ThrottleView(ctx context.Context, keys []string, since time.Time) (map[string]ThrottleEntry, error)
	// ThrottleUpdate calls fn with the live entries of keys (those whose
	// last failure is after since; others are absent) while holding their
	// rows, and stores what fn leaves in the map: new or changed entries are
	// written, deleted ones removed. Concurrent updates of the same keys, on
	// any replica, run one after the other.
	ThrottleUpdate(ctx context.Context, keys []string, since time.Time, fn func(map[string]ThrottleEntry)) error
	// ThrottleSweep removes entries whose last failure is before before.
	ThrottleSweep(ctx context.Context, before time.Time) error
}

var _ Throttle = (*Postgres)(nil)

// ThrottleView implements Throttle.
func (s *Postgres) ThrottleView(ctx context.Context, keys []string, since time.Time) (map[string]ThrottleEntry, error) {
	return throttleRows(ctx, s.pool, `SELECT key, fails, until, last FROM login_throttle WHERE key = ANY($1) AND last > $2`, keys, since)
}

// ThrottleUpdate implements Throttle.
func (s *Postgres) ThrottleUpdate(ctx context.Context, keys []string, since time.Time, fn func(map[string]ThrottleEntry)) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("sign-in throttle: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Rows that do not exist yet cannot be locked: a transaction-scoped
	// advisory lock per key serialises their creation too.
	for _, k := range keys {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 7031))`, k); err != nil {
			return fmt.Errorf("sign-in throttle: lock %s: %w", k, err)
		}
	}
	cur, err := throttleRows(ctx, tx, `SELECT key, fails, until, last FROM login_throttle WHERE key = ANY($1) AND last > $2`, keys, since)
	if err != nil {
		return err
	}
	next := make(map[string]ThrottleEntry, len(cur))
	for k, e := range cur {
		next[k] = e
	}
	fn(next)
	for _, k := range keys {
		e, keep := next[k]
		old, had := cur[k]
		switch {
		case keep && (!had || e != old):
			_, err = tx.Exec(ctx, `INSERT INTO login_throttle (key, fails, until, last) VALUES ($1, $2, $3, $4)
				ON CONFLICT (key) DO UPDATE SET fails = excluded.fails, until = excluded.until, last = excluded.last`,
				k, e.Fails, e.Until.UnixMilli(), e.Last.UnixMilli())
		case !keep:
			_, err = tx.Exec(ctx, `DELETE FROM login_throttle WHERE key = $1`, k)
		}
		if err != nil {
			return fmt.Errorf("sign-in throttle: write %s: %w", k, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("sign-in throttle: commit: %w", err)
	}
	return nil
}

// ThrottleSweep implements Throttle.
func (s *Postgres) ThrottleSweep(ctx context.Context, before time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM login_throttle WHERE last < $1`, before.UnixMilli()); err != nil {
		return fmt.Errorf("sign-in throttle: sweep: %w", err)
	}
	return nil
}

func throttleRows(ctx context.Context, q querier, sql string, keys []string, since time.Time) (map[string]ThrottleEntry, error) {
	rows, err := q.Query(ctx, sql, keys, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("sign-in throttle: read: %w", err)
	}
	defer rows.Close()
	out := map[string]ThrottleEntry{}
	for rows.Next() {
		var k string
		var fails int
		var until, last int64
		if err := rows.Scan(&k, &fails, &until, &last); err != nil {
			return nil, fmt.Errorf("sign-in throttle: read: %w", err)
		}
		out[k] = ThrottleEntry{Fails: fails, Until: time.UnixMilli(until), Last: time.UnixMilli(last)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sign-in throttle: read: %w", err)
	}
	return out, nil
}
