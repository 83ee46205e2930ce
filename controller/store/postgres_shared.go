package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Touch implements Shared.
func (s *Postgres) Touch(ctx context.Context, kind, id string, at time.Time, data json.RawMessage) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO presence (kind, id, seen, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (kind, id) DO UPDATE SET seen = excluded.seen, data = excluded.data WHERE presence.seen <= excluded.seen`,
		kind, id, at.UnixMilli(), nullJSON(data))
	if err != nil {
		return fmt.Errorf("record presence of %s %s: %w", kind, id, err)
	}
	return nil
}

// Presence implements Shared.
func (s *Postgres) Presence(ctx context.Context, kind string) (map[string]Presence, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, seen, data FROM presence WHERE kind = $1`, kind)
	if err != nil {
		return nil, fmt.Errorf("read presence of %s: %w", kind, err)
	}
	defer rows.Close()
	out := map[string]Presence{}
	for rows.Next() {
		var id string
		var seen int64
		var data *string
		if err := rows.Scan(&id, &seen, &data); err != nil {
			return nil, fmt.Errorf("read presence of %s: %w", kind, err)
		}
		p := Presence{Seen: time.UnixMilli(seen).UTC()}
		if data != nil {
			p.Data = json.RawMessage(*data)
		}
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read presence of %s: %w", kind, err)
	}
	return out, nil
}

// ClaimDeployment implements Shared.
func (s *Postgres) ClaimDeployment(ctx context.Context, identity map[string]string) error {
	keys := make([]string, 0, len(identity))
	for k := range identity {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("claim deployment: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var bad []string
	for _, k := range keys {
		if _, err := tx.Exec(ctx, `INSERT INTO deployment (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, k, identity[k]); err != nil {
			return fmt.Errorf("claim deployment %s: %w", k, err)
		}
		var v string
		if err := tx.QueryRow(ctx, `SELECT value FROM deployment WHERE key = $1`, k).Scan(&v); err != nil {
			return fmt.Errorf("claim deployment %s: %w", k, err)
		}
		if v != identity[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrDeploymentMismatch, strings.Join(bad, ", "))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("claim deployment: %w", err)
	}
	return nil
}
