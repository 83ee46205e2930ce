package controller

import (
	"context"
	"encoding/json"
	"maps"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// recTx records what a transaction writes, so the in-memory model can be
// moved forward without reloading everything.
type recTx struct {
	store.Tx
	changes []store.Object // Data nil: deleted
	ip      string         // the client IP of the request, for audit entries
	ctx     context.Context
}

// Audit records e, with the request's client IP when e names none.
func (t *recTx) Audit(e store.AuditEntry) error {
	if e.IP == "" {
		e.IP = t.ip
	}
	attribute(t.ctx, &e)
	return t.Tx.Audit(e)
}

func (t *recTx) Put(o store.Object) error {
	if err := t.Tx.Put(o); err != nil {
		return err
	}
	t.changes = append(t.changes, o)
	return nil
}

func (t *recTx) Delete(kind, id string) error {
	if err := t.Tx.Delete(kind, id); err != nil {
		return err
	}
	t.changes = append(t.changes, store.Object{Kind: kind, ID: id})
	return nil
}

// commit runs fn in a store transaction and brings the model to the new
// revision: incrementally when only sessions, devices, connectors, relays or
// enrollment tokens changed (sign-ins, heartbeats), else by a full reload.
// Subscribers are woken either way, unless the commit only changed what no
// snapshot shows (a session's External state, kept by the OIDC refresher).
func (c *Controller) commit(ctx context.Context, fn func(store.Tx) error) (int64, bool, error) {
	c.reloadMu.Lock()
	rt := &recTx{ip: api.RequestIP(ctx), ctx: ctx}
	rev, changed, err := c.store.Update(ctx, func(tx store.Tx) error {
		rt.Tx, rt.changes = tx, nil
		return fn(rt)
	})
	if err != nil || !changed {
		c.reloadMu.Unlock()
		return rev, changed, err
	}
	if m := c.cur.Load(); m != nil && m.Rev == rev-1 {
		if nm, ok := m.with(rev, rt.changes); ok {
			c.cur.Store(nm)
			c.reloadMu.Unlock()
			c.wakeFor(m, rt.changes)
			return rev, true, nil
		}
	}
	c.reloadMu.Unlock()
	return rev, true, c.reload(ctx)
}

// commitReload is commit followed by a reload, for callers that answer
// with the model as of at least their change and what other replicas
// committed meanwhile.
func (c *Controller) commitReload(ctx context.Context, fn func(store.Tx) error) error {
	_, _, err := c.commit(ctx, fn)
	if err == nil {
		err = c.reload(ctx)
	}
	return err
}

// with returns a copy of m at revision rev with changes applied, or false
// when a change needs a full rebuild (policy objects and memberships).
func (m *Model) with(rev int64, changes []store.Object) (*Model, bool) {
	nm := *m
	nm.Rev = rev
	nm.revoked = &revokedCache{}
	cloned := map[string]bool{}
	once := func(kind string, f func()) {
		if !cloned[kind] {
			cloned[kind] = true
			f()
		}
	}
	for _, o := range changes {
		deleted := o.Data == nil
		switch o.Kind {
		case KindSession:
			once(o.Kind, func() { nm.Sessions = maps.Clone(m.Sessions); nm.SessionByID = maps.Clone(m.SessionByID) })
			if old, ok := nm.SessionByID[o.ID]; ok {
				delete(nm.Sessions, old.TokenHash)
				delete(nm.SessionByID, o.ID)
			}
			if !deleted {
				v := new(Session)
				if json.Unmarshal(o.Data, v) != nil {
					return nil, false
				}
				nm.SessionByID[v.ID] = v
				if !v.Revoked {
					nm.Sessions[v.TokenHash] = v
				}
			}
		case KindDevice:
			once(o.Kind, func() { nm.Devices = maps.Clone(m.Devices); nm.DeviceByKey = maps.Clone(m.DeviceByKey) })
			if old, ok := nm.Devices[o.ID]; ok {
				delete(nm.DeviceByKey, old.PrincipalID+"/"+old.Thumbprint)
			}
			delete(nm.Devices, o.ID)
			if !deleted {
				v := new(Device)
				if json.Unmarshal(o.Data, v) != nil {
					return nil, false
				}
				nm.Devices[v.ID] = v
				nm.DeviceByKey[o.Name] = v
			}
		case KindConnector:
			once(o.Kind, func() { nm.Connectors = maps.Clone(m.Connectors); nm.ConnectorByName = maps.Clone(m.ConnectorByName) })
			old, ok := nm.Connectors[o.ID]
			if deleted {
				return nil, false // membership of a network changes: rebuild
			}
			v := new(Connector)
			if json.Unmarshal(o.Data, v) != nil || !ok || old.Network != v.Network || old.Name != v.Name {
				return nil, false
			}
			nm.Connectors[v.ID] = v
			nm.ConnectorByName[v.Name] = v
		case KindRelay:
			once(o.Kind, func() { nm.Relays = maps.Clone(m.Relays) })
			delete(nm.Relays, o.ID)
			if !deleted {
				v := new(Relay)
				if json.Unmarshal(o.Data, v) != nil {
					return nil, false
				}
				nm.Relays[v.ID] = v
			}
		case KindEnrollment, KindWebAuthnCeremony, KindAdmin, KindAdminToken, KindAdminSession, KindAppliedFile:
			// Not part of any snapshot.
		default:
			return nil, false
		}
	}
	return &nm, true
}

// wakeFor wakes the push streams that changes (applied to m) can alter.
func (c *Controller) wakeFor(m *Model, changes []store.Object) {
	if externalOnly(m, changes) || adminOnly(changes) {
		return
	}
	switch signIn, known := newSessionsOnly(m, changes); {
	case signIn && !known:
		// A new device's first sign-in: no snapshot shows it (the
		// revoked lists only ever hold devices seen before).
	case signIn:
		// A known device signing in again: it may leave the connectors'
		// and relays' list of revoked devices; no client snapshot changes.
		c.hub.notifyComponents()
	default:
		c.hub.notify()
	}
}

// newSessionsOnly reports whether changes only create sessions that are
// not revoked, with their devices (a sign-in), and whether one of those
// devices was known before. No client snapshot shows another device's
// sessions, so waking every client stream for each sign-in (one snapshot per
// stream per sign-in, quadratic in the devices signing in) buys nothing.
func newSessionsOnly(m *Model, changes []store.Object) (signIn, knownDevice bool) {
	for _, o := range changes {
		if o.Data == nil {
			return false, false
		}
		switch o.Kind {
		case KindSession:
			if _, ok := m.SessionByID[o.ID]; ok {
				return false, false
			}
			var v Session
			if json.Unmarshal(o.Data, &v) != nil || v.Revoked {
				return false, false
			}
			if _, ok := m.Devices[v.DeviceID]; ok {
				knownDevice = true
			}
		case KindDevice:
			var v Device
			if json.Unmarshal(o.Data, &v) != nil || v.Revoked {
				return false, false
			}
			if old, ok := m.Devices[o.ID]; ok {
				if old.Revoked {
					return false, false
				}
				knownDevice = true // a known device's name or OS updated
			}
		default:
			return false, false
		}
	}
	return len(changes) > 0, knownDevice
}

// externalOnly reports whether changes only touch sessions' External state,
// which no push snapshot depends on: waking every subscriber for each OIDC
// refresh would cost a snapshot per stream per refresh.
func externalOnly(m *Model, changes []store.Object) bool {
	for _, o := range changes {
		if o.Kind != KindSession || o.Data == nil {
			return false
		}
		old, ok := m.SessionByID[o.ID]
		if !ok {
			return false
		}
		var v Session
		if json.Unmarshal(o.Data, &v) != nil {
			return false
		}
		if v.TokenHash != old.TokenHash || v.DeviceID != old.DeviceID || v.PrincipalID != old.PrincipalID ||
			v.PrincipalKind != old.PrincipalKind || v.Method != old.Method || v.Revoked != old.Revoked ||
			!v.ExpiresAt.Equal(old.ExpiresAt) || !v.RevokedAt.Equal(old.RevokedAt) || !v.Created.Equal(old.Created) ||
			!v.MFAAt.Equal(old.MFAAt) {
			return false
		}
	}
	return len(changes) > 0
}
