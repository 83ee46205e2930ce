package controller

import (
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

// SubscribePolicy subscribes a push stream to model changes: connector and
// relay streams (components) or client streams (api.Policies).
func (c *Controller) SubscribePolicy(components bool) (<-chan struct{}, func()) {
	class := subClient
	if components {
		class = subComponent
	}
	return c.hub.subscribe(class)
}

// PolicyRevision is the current model's revision (api.Policies).
func (c *Controller) PolicyRevision() int64 { return c.model().Rev }

// StreamKeepalive is Config.KeepaliveInterval (api.Policies).
func (c *Controller) StreamKeepalive() time.Duration { return c.cfg.KeepaliveInterval }

// ConnectorPolicy feeds connector id's policy stream (api.Policies).
func (c *Controller) ConnectorPolicy(id string) api.PolicyFeed {
	return func() api.Snapshot {
		m := c.model()
		p, ok := m.connectorPolicy(id, c.issuer, c.JWKS(), c.now())
		if !ok {
			return api.Snapshot{End: "connector " + id + " was removed"}
		}
		p.ControllerURLs = c.controllerURLs()
		p.Revision = 0
		return api.Snapshot{Rev: m.Rev, Body: &p, SetRev: func(rev int64) { p.Revision = rev }}
	}
}

// RelayPolicy feeds relay id's policy stream (api.Policies).
func (c *Controller) RelayPolicy(id string) api.PolicyFeed {
	return func() api.Snapshot {
		m := c.model()
		if _, ok := m.Relays[id]; !ok {
			return api.Snapshot{End: "relay " + id + " was removed"}
		}
		p := m.relayPolicy(time.Now())
		p.ControllerURLs = c.controllerURLs()
		p.Revision = 0
		return api.Snapshot{Rev: m.Rev, Body: &p, SetRev: func(rev int64) { p.Revision = rev }}
	}
}

// PolicyFeed feeds the device's client policy stream until its session or
// device ends (api.ClientSession).
func (cs *clientSession) PolicyFeed() api.PolicyFeed {
	c, hash := cs.c, cs.s.TokenHash
	return func() api.Snapshot {
		m := c.model()
		s, ok := m.Sessions[hash]
		if !ok || m.credentialProblem(s, c.now()) != "" {
			return api.Snapshot{End: "session ended; sign in again"}
		}
		if d, ok := m.Devices[s.DeviceID]; !ok || d.Revoked {
			return api.Snapshot{End: "device revoked"}
		}
		p, ok := m.clientPolicy(s.PrincipalID, c.issuer, c.JWKS(), c.connectorLoad)
		if !ok {
			return api.Snapshot{End: "account removed or disabled"}
		}
		m.annotateAccess(&p, s.PrincipalID, s.DeviceID, c.now())
		p.ControllerURLs = c.controllerURLs()
		p.Range4, p.Range6 = m.clientRanges()
		p.Revision = 0
		return api.Snapshot{Rev: m.Rev, Body: &p, SetRev: func(rev int64) { p.Revision = rev }}
	}
}
