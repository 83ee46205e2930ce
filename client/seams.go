// The flow layer's seams to the session (package client/session): it reads
// the policy through PolicySource and asks for tokens through TokenSource
// and relayCredentials, so it can be driven in tests with fakes. The daemon
// wires a *session.Manager into all three.

package client

import (
	"context"
	"crypto/tls"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
)

// PolicySource is the session's policy as the flow layer sees it.
type PolicySource interface {
	// Current returns the policy snapshot (nil: none) and a channel that
	// is closed when it is replaced. A snapshot is never modified.
	Current() (*controlapi.ClientPolicy, <-chan struct{})
}

// TokenSource fetches and verifies Connection Tokens for the pool.
type TokenSource interface {
	// ConnectionToken returns a verified token for connector c and the
	// certificate digest it pins.
	ConnectionToken(ctx context.Context, c controlapi.ConnectorInfo) (token string, claims *ctoken.Claims, err error)
	// DeviceCert is the client certificate connections present.
	DeviceCert() tls.Certificate
}

// relayCredentials is what the traversal dialer asks the session for.
type relayCredentials interface {
	TURNCredentials(ctx context.Context) (controlapi.TURNCredentials, error)
	SignalingToken(ctx context.Context, connectorID string) (string, error)
}

// followPolicy applies every policy snapshot src makes current, until stop
// is closed. (syncPolicyLocked reads d.policy under d.mu: a test may swap
// it.)
func (d *Daemon) followPolicy(src PolicySource, stop <-chan struct{}) {
	for {
		_, next := src.Current()
		d.mu.Lock()
		d.syncPolicyLocked()
		d.mu.Unlock()
		select {
		case <-next:
		case <-stop:
			return
		}
	}
}

// syncPolicyLocked installs the current snapshot, when it is not installed
// yet: relays, routes, pool, front-end, synthetic ranges.
func (d *Daemon) syncPolicyLocked() {
	p, _ := d.policy.Current()
	if p == d.applied {
		return
	}
	d.applied = p
	if p == nil {
		d.relays.Store(nil)
	} else {
		d.relays.Store(&p.Relays)
	}
	d.table.Store(buildRouteTable(p))
	if p != nil && d.pool != nil {
		d.pool.retain(p.Connectors)
	}
	if d.front != nil {
		d.front.Update(d.policyViewLocked())
	}
	if p != nil {
		d.learnRangesLocked(p)
	}
	d.changed()
}

// policyViewLocked is what the front-end needs of the policy: routes,
// resources and connectors.
func (d *Daemon) policyViewLocked() *PolicyView {
	v := &PolicyView{Routes: d.table.Load().routes()}
	if d.applied != nil {
		v.Resources = d.applied.Resources
		v.Connectors = d.applied.Connectors
	}
	return v
}

// sessionEvents is the daemon's session.Observer.
type sessionEvents struct{ d *Daemon }

// ControllerUp clears the status message and, when the controller is back
// after an outage, retries at once the connectors whose token refresh
// failed meanwhile (a connector in fail static wants a fresh token soon).
func (e sessionEvents) ControllerUp(recovered bool) {
	d := e.d
	d.mu.Lock()
	d.lastErr = ""
	pl := d.pool
	d.mu.Unlock()
	if recovered && pl != nil {
		pl.retryNow()
	}
	d.changed()
}

// ControllerDown shows why the controller cannot be reached.
func (e sessionEvents) ControllerDown(msg string) {
	d := e.d
	d.mu.Lock()
	d.lastErr = msg
	d.mu.Unlock()
	d.changed()
}

// SessionEnded takes the tunnel down when the controller ended the
// session: every flow and connection to connectors is torn down, and once
// the session forgot it (its policy goes, followPolicy clears the routes)
// status says signed_out with ErrSessionEnded's message until someone signs
// in again.
func (e sessionEvents) SessionEnded(error) {
	d := e.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return
	}
	d.downLocked()
	d.lastErr = ErrSessionEnded.Error()
	d.changed()
}
