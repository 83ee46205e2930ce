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
	c.rtMu.Lock()
	conns := overdue(m.Connectors, c.connSeen, c.started, now, limit, func(v *Connector) bool { return v.Online })
	relays := overdue(m.Relays, c.relaySeen, c.started, now, limit, func(v *Relay) bool { return v.Online })
	c.rtMu.Unlock()
	if len(conns) == 0 && len(relays) == 0 {
		return
	}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		if err := setOffline(tx, KindConnector, conns, func(v *Connector) *bool { return &v.Online }); err != nil {
			return err
		}
		return setOffline(tx, KindRelay, relays, func(v *Relay) *bool { return &v.Online })
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

// overdue lists the online components of items whose last heartbeat (or,
// for one not heard from since, the controller's start) is older than limit.
func overdue[T any](items map[string]T, seen map[string]time.Time, started, now time.Time, limit time.Duration, online func(T) bool) []string {
	var ids []string
	for id, v := range items {
		last, ok := seen[id]
		if !ok {
			last = started
		}
		if online(v) && now.Sub(last) > limit {
			ids = append(ids, id)
		}
	}
	return ids
}

// setOffline clears the online flag of the records ids of kind (a record
// deleted meanwhile is skipped).
func setOffline[T any](tx store.Tx, kind string, ids []string, flag func(*T) *bool) error {
	for _, id := range ids {
		err := updateRecord(tx, kind, id, func(v *T) bool {
			on := flag(v)
			ch := *on
			*on = false
			return ch
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
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
