// Background upkeep: components marked offline after missed heartbeats,
// expired sessions revoked, and old sessions and enrollment tokens removed.

package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"postern.dev/postern/controller/store"
)

// monitorLoop marks connectors and relays offline after three missed
// heartbeats, revokes sessions that reached their or their credential's
// expiry, and removes old sessions and enrollment tokens.
func (c *Controller) monitorLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	lastGC := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.touchReplica(ctx)
		c.syncPresence(ctx)
		c.markOffline(ctx)
		c.sweepExpired(ctx)
		c.accessTick(ctx)
		if time.Since(lastGC) > time.Hour {
			lastGC = time.Now()
			if err := c.gc(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("garbage-collect expired sessions", "err", err)
			}
			if err := c.logins.sweep(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("sweep the sign-in throttle", "err", err)
			}
			if c.follower != nil {
				if err := c.follower.PruneChanges(ctx, time.Now().Add(-24*time.Hour)); err != nil && ctx.Err() == nil {
					c.log.Warn("prune the change log", "err", err)
				}
			}
		}
	}
}

// markOffline marks connectors and relays offline whose last heartbeat is
// three intervals old.
func (c *Controller) markOffline(ctx context.Context) {
	// Three missed heartbeats, counted in the whole seconds components are told.
	limit := 3 * time.Duration(c.intervalSeconds()) * time.Second
	now := time.Now()
	m := c.model()
	var conns, relays []string
	c.rtMu.Lock()
	for id, cn := range m.Connectors {
		seen, ok := c.connSeen[id]
		if !ok {
			seen = c.started
		}
		if cn.Online && now.Sub(seen) > limit {
			conns = append(conns, id)
		}
	}
	for id, r := range m.Relays {
		seen, ok := c.relaySeen[id]
		if !ok {
			seen = c.started
		}
		if r.Online && now.Sub(seen) > limit {
			relays = append(relays, id)
		}
	}
	c.rtMu.Unlock()
	if len(conns) == 0 && len(relays) == 0 {
		return
	}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		for _, id := range conns {
			if err := updateRecord(tx, KindConnector, id, func(v *Connector) bool { ch := v.Online; v.Online = false; return ch }); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		for _, id := range relays {
			if err := updateRecord(tx, KindRelay, id, func(v *Relay) bool { ch := v.Online; v.Online = false; return ch }); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("mark offline", "err", err)
		}
		return
	}
	for _, id := range conns {
		c.log.Info("connector offline (missed heartbeats)", "connector", id)
	}
	for _, id := range relays {
		c.log.Info("relay offline (missed heartbeats)", "relay", id)
	}
	if err := c.reload(ctx); err != nil && ctx.Err() == nil {
		c.log.Error("reload", "err", err)
	}
}

// updateRecord reads a record, lets fn change it and writes it back when fn
// reports a change.
func updateRecord[T any](tx store.Tx, kind, id string, fn func(*T) bool) error {
	o, err := tx.Get(kind, id)
	if err != nil {
		return err
	}
	v := new(T)
	if err := json.Unmarshal(o.Data, v); err != nil {
		return fmt.Errorf("decode %s %s: %w", kind, id, err)
	}
	if !fn(v) {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	o.Data = b
	return tx.Put(o)
}

// gc deletes sessions a day past their expiry or eight days past their
// revocation, and enrollment tokens a day past their expiry.
func (c *Controller) gc(ctx context.Context) error {
	now := c.now()
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		var sessions []Session
		if err := listInto(tx, KindSession, &sessions); err != nil {
			return err
		}
		for _, s := range sessions {
			if now.Sub(s.ExpiresAt) > 24*time.Hour || (s.Revoked && now.Sub(s.RevokedAt) > 8*24*time.Hour) {
				if err := tx.Delete(KindSession, s.ID); err != nil {
					return err
				}
			}
		}
		var enr []Enrollment
		if err := listInto(tx, KindEnrollment, &enr); err != nil {
			return err
		}
		for _, e := range enr {
			if now.Sub(e.ExpiresAt) > 24*time.Hour {
				if err := tx.Delete(KindEnrollment, e.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.reload(ctx)
}
