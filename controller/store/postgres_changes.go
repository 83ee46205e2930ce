package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Follower is implemented by backends whose commits another process (a
// replica) can follow by reading only what changed.
type Follower interface {
	// ChangesSince returns the current revision and every object written
	// after revision since (Data nil: deleted), in one snapshot. It returns
	// ErrChangesGone when since is older than the change log keeps (or
	// predates it): reload everything instead.
	ChangesSince(ctx context.Context, since int64) (int64, []Object, error)
	// PruneChanges forgets tombstones older than before (their revision is
	// recorded, see ErrChangesGone).
	PruneChanges(ctx context.Context, before time.Time) error
}

// ErrChangesGone: the change log no longer covers the revision asked for.
var ErrChangesGone = errors.New("changes no longer kept for that revision")

var _ Follower = (*Postgres)(nil)

// ChangesSince implements Follower.
func (s *Postgres) ChangesSince(ctx context.Context, since int64) (int64, []Object, error) {
	var rev int64
	var out []Object
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		var from int64
		if err := tx.QueryRow(ctx, `SELECT (SELECT value FROM meta WHERE key = 'revision'), (SELECT value FROM meta WHERE key = 'tombstones_from')`).Scan(&rev, &from); err != nil {
			return fmt.Errorf("read revision: %w", err)
		}
		if since < from {
			return fmt.Errorf("%w: %d (kept from %d)", ErrChangesGone, since, from)
		}
		if since >= rev {
			return nil
		}
		var err error
		if out, err = queryKindedObjects(ctx, tx, "read changes", `SELECT kind, id, name, data, updated FROM objects WHERE rev > $1`, since); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT kind, id FROM tombstones WHERE rev > $1`, since)
		if err != nil {
			return fmt.Errorf("read deletions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var o Object
			if err := rows.Scan(&o.Kind, &o.ID); err != nil {
				return fmt.Errorf("read deletions: %w", err)
			}
			out = append(out, o)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read deletions: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return rev, out, nil
}

// PruneChanges implements Follower: tombstones are kept for a day, then
// followers further behind reload in full.
func (s *Postgres) PruneChanges(ctx context.Context, before time.Time) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("prune tombstones: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var upTo int64
	// Tombstones carry revisions, not times: prune those whose revision is
	// older than the oldest object written after before.
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MIN(rev), 0) FROM objects WHERE updated >= $1`, before.UnixMilli()).Scan(&upTo); err != nil {
		return fmt.Errorf("prune tombstones: %w", err)
	}
	if upTo == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tombstones WHERE rev < $1`, upTo); err != nil {
		return fmt.Errorf("prune tombstones: %w", err)
	}
	// A follower at revision upTo-1 still finds every deletion it needs
	// (those after it); one further behind does not.
	if _, err := tx.Exec(ctx, `UPDATE meta SET value = GREATEST(value, $1) WHERE key = 'tombstones_from'`, upTo-1); err != nil {
		return fmt.Errorf("prune tombstones: %w", err)
	}
	return tx.Commit(ctx)
}
