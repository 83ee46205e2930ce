package client

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Background redial of a connector whose connection died (or whose dial
// for a flow failed), so that the next flow finds it ready.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 4 * time.Second
)

// Connector states as status reports them.
const (
	ConnStateConnected    = "connected"    // a live connection
	ConnStateSilent       = "silent"       // connected, but nothing heard for suspectAfter
	ConnStateReconnecting = "reconnecting" // no connection; dialing in the background
	ConnStateOffline      = "offline"      // the controller says the connector is offline
	ConnStateIdle         = "idle"         // no connection and none needed yet
)

// stateLocked derives e's state; e.mu is held.
func (e *connEntry) stateLocked() string {
	switch {
	case e.conn != nil && e.suspect.Load():
		return ConnStateSilent
	case e.conn != nil:
		return ConnStateConnected
	case !e.info.Online:
		return ConnStateOffline
	case e.reconnecting:
		return ConnStateReconnecting
	}
	return ConnStateIdle
}

// startReconnect starts the background redial of e unless one runs or the
// pool is closing. cause is why e has no connection.
func (p *pool) startReconnect(e *connEntry, cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	if e.reconnecting || e.removed || (e.conn != nil && !e.draining) {
		e.mu.Unlock()
		return
	}
	e.reconnecting = true
	if e.conn == nil {
		e.since = time.Now()
	}
	if cause != nil {
		e.lastErr = cause.Error()
	}
	e.mu.Unlock()
	p.wg.Add(1)
	go p.reconnect(e)
}

// retryNow makes every background redial and token refresh retry at once:
// the network changed (the old path may be gone and a new one work) or the
// controller is reachable again.
func (p *pool) retryNow() {
	p.mu.Lock()
	close(p.kick)
	p.kick = make(chan struct{})
	p.mu.Unlock()
}

func (p *pool) kicked() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kick
}

// jitter spreads d over [d/2, d] so that clients do not redial in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// reconnect redials e with jittered exponential backoff (reconnectMin up to
// reconnectMax), at once after a network change, until a connection is up,
// the connector leaves the policy or the pool closes.
func (p *pool) reconnect(e *connEntry) {
	defer p.wg.Done()
	stop := func() {
		e.mu.Lock()
		e.reconnecting = false
		e.mu.Unlock()
		p.changed()
	}
	backoff := reconnectMin
	// kick is taken once and renewed only when it fired, so a network change
	// that happens during a dial attempt is not lost: the next wait ends at
	// once.
	kick := p.kicked()
	for {
		t := time.NewTimer(jitter(backoff))
		select {
		case <-p.ctx.Done():
			t.Stop()
			stop()
			return
		case <-kick:
			t.Stop()
			kick = p.kicked()
			backoff = reconnectMin
		case <-t.C:
		}
		e.mu.Lock()
		done := e.removed || (e.conn != nil && !e.draining)
		online := e.info.Online
		name := e.info.Name
		e.mu.Unlock()
		if done {
			stop()
			return
		}
		if !online {
			// The controller says it is offline: check again slowly, or
			// when the policy or the network changes.
			backoff = reconnectMax
			continue
		}
		if _, err := p.get(p.ctx, e); err == nil {
			p.log.Info("reconnected to connector", "connector", name)
			stop()
			return
		} else if p.ctx.Err() == nil {
			p.log.Debug("redial connector", "connector", name, "err", err, "next_within", backoff*2)
		}
		backoff = min(backoff*2, reconnectMax)
	}
}

// refusalLog rate-limits the WARN lines of refused flows: at most one per
// key (a network without a path, or a network at its flow limit) every
// refusalLogEvery,
// with the count of the others.
type refusalLog struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

const refusalLogEvery = 10 * time.Second

// allow reports whether a line for key may be logged now and how many were
// held back since the last one.
func (r *refusalLog) allow(key string) (held int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last, r.held = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if now.Sub(r.last[key]) < refusalLogEvery {
		r.held[key]++
		return 0, false
	}
	r.last[key] = now
	held = r.held[key]
	r.held[key] = 0
	return held, true
}

// warn logs, at most once per refusalLogEvery for network, that a flow to
// resource was refused because no connector could be reached.
func (r *refusalLog) warn(log *slog.Logger, network, resource string, connectors []string, err error) {
	held, ok := r.allow("network " + network)
	if !ok {
		return
	}
	log.Warn("flow refused: no path to a connector",
		"network", network, "resource", resource, "connectors", strings.Join(connectors, ","),
		"paths_tried", pathsTried(err), "reason", err, "similar_refusals_since_last", held)
}

// warnLimit logs, at most once per refusalLogEvery for network, that every
// connector of network refused a flow to resource because this device has
// as many flows open there as it allows one device.
func (r *refusalLog) warnLimit(log *slog.Logger, network, resource, msg string) {
	held, ok := r.allow("limit " + network)
	if !ok {
		return
	}
	log.Warn("flow refused: too many flows open at the connector; close some",
		"network", network, "resource", resource, "reason", msg, "similar_refusals_since_last", held)
}

// pathsTried lists the distinct failures joined in err, one per path or
// connector the flow tried.
func pathsTried(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		s := err.Error()
		for _, o := range out {
			if o == s {
				return
			}
		}
		out = append(out, s)
	}
	var fe *FlowError
	if errors.As(err, &fe) && fe.Err != nil {
		err = fe.Err
	}
	walk(err)
	return out
}
