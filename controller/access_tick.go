package controller

import (
	"context"
	"encoding/json"
	"time"

	"postern.dev/postern/controller/store"
)

// accessTicker follows the time-based parts of access governance from the
// monitor loop: it records the end of grants (state expired, audited once,
// which also re-pushes policies) and wakes the push streams when an MFA or
// auto-lock window passes, so that clients show the new state. Connectors
// judge those times with their own clock and need no push for them.
type accessTicker struct {
	rev  int64     // model revision next was computed for
	next time.Time // earliest time an access state changes; zero: none
}

func (c *Controller) accessTick(ctx context.Context) {
	now := c.now()
	m := c.model()
	var ended []string
	for id, r := range m.access.requests {
		if r.State == reqApproved && !now.Before(r.End) {
			ended = append(ended, id)
		}
	}
	if len(ended) > 0 {
		if err := c.expireGrants(ctx, ended); err != nil && ctx.Err() == nil {
			c.log.Warn("record the end of access grants", "err", err)
		}
		return // the commit re-pushed everything
	}
	t := &c.accessTicks
	if t.rev != m.Rev {
		t.rev, t.next = m.Rev, m.nextAccessChange(now)
	}
	if !t.next.IsZero() && !now.Before(t.next) {
		c.hub.notify()
		t.next = m.nextAccessChange(now)
	}
}

// expireGrants marks approved requests whose end has passed as expired.
func (c *Controller) expireGrants(ctx context.Context, ids []string) error {
	now := c.now()
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			o, err := tx.Get(KindAccessRequest, id)
			if err != nil {
				continue // deleted meanwhile
			}
			var r AccessRequestRec
			if err := json.Unmarshal(o.Data, &r); err != nil {
				return err
			}
			if r.State != reqApproved || now.Before(r.End) {
				continue // another replica was first
			}
			r.State = reqExpired
			no, err := toObject(KindAccessRequest, id, id, &r)
			if err != nil {
				return err
			}
			if err := tx.Put(no); err != nil {
				return err
			}
			after, _ := json.Marshal(map[string]any{"requester": r.RequesterName, "end": r.End, "duration": r.Duration})
			if err := tx.Audit(store.AuditEntry{Actor: "controller", Action: "access-expire", Kind: KindAccessRequest, ObjectID: id, Name: r.ResourceName, After: after}); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// nextAccessChange is the earliest time after now at which a client's view
// of its access changes by time alone: an MFA window or an auto-lock window
// passing (grant ends are handled by expireGrants).
func (m *Model) nextAccessChange(now time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, r := range m.Resources {
		if w := mfaWindow(r.Require); w > 0 {
			for _, s := range m.Sessions {
				if !s.MFAAt.IsZero() {
					consider(s.MFAAt.Add(w))
				}
			}
		}
		if lock := m.autoLock(); lock > 0 && maxGrant(r.Require) == 0 {
			for _, g := range r.Groups {
				for _, pid := range m.groupMembers[g] {
					consider(m.lastUse(pid, r.ID).Add(lock))
				}
			}
		}
	}
	return next
}
