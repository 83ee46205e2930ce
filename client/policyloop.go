// The session's background work: the controller client, the policy stream
// that keeps d.pol current (resuming by revision), and applying a policy to
// the signing keys, routing table, connection pool and front-end.

package client

import (
	"context"
	"errors"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
)

// policyViewLocked is what the front-end needs of the policy: routes,
// resources and connectors.
func (d *Daemon) policyViewLocked() *PolicyView {
	v := &PolicyView{Routes: d.table.Load().routes()}
	if d.pol != nil {
		v.Resources = d.pol.Resources
		v.Connectors = d.pol.Connectors
	}
	return v
}

// startSessionLocked creates the controller client and starts the policy stream.
func (d *Daemon) startSessionLocked() error {
	if d.ctl == nil {
		cc, err := newControlClient(d.sess.ControllerURL, d.sess.CAPEM, d.sess.SessionToken)
		if err != nil {
			return err
		}
		d.ctl = cc
		if d.pol != nil {
			d.learnControllersLocked(d.pol.ControllerURLs)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.sessCancel = cancel
	d.sessWG.Add(2)
	go d.policyLoop(ctx, d.ctl)
	go d.postureLoop(ctx, d.ctl)
	return nil
}

func (d *Daemon) stopSessionLocked() {
	if d.sessCancel != nil {
		d.sessCancel()
		d.sessCancel = nil
	}
	// Also when sessionEnded already cancelled the loop: it may still be
	// returning.
	d.mu.Unlock()
	d.sessWG.Wait()
	d.mu.Lock()
	if d.ctl != nil {
		d.ctl.close()
		d.ctl = nil
	}
	d.reachable = false
	d.downSince = time.Time{}
}

// policyLoop keeps the policy stream open, reconnecting with backoff and
// resuming from the last revision.
func (d *Daemon) policyLoop(ctx context.Context, cc *controlClient) {
	defer d.sessWG.Done()
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		d.mu.Lock()
		rev := int64(0)
		if d.pol != nil {
			rev = d.pol.Revision
		}
		d.mu.Unlock()
		start := time.Now()
		err := cc.policyStream(ctx, rev, func() {
			d.mu.Lock()
			was := d.reachable
			d.reachable, d.downSince = true, time.Time{}
			d.lastErr = ""
			pl := d.pool
			d.mu.Unlock()
			if !was && pl != nil {
				// Token refreshes that failed while the controller was
				// away retry now: a connector in fail static wants a
				// fresh token soon after the controller is back.
				pl.retryNow()
			}
			d.changed()
		}, func(p *controlapi.ClientPolicy) {
			d.mu.Lock()
			d.applyPolicyLocked(p, true)
			d.mu.Unlock()
			d.changed()
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrSessionEnded) {
			d.sessionEnded(ctx, cc, err)
			return
		}
		d.mu.Lock()
		if d.reachable || d.downSince.IsZero() {
			d.downSince = time.Now()
		}
		d.reachable = false
		d.lastErr = err.Error()
		if errors.Is(err, ErrUnauthorized) {
			d.lastErr = "the controller no longer accepts this session (expired or revoked): sign in again with postern login"
		}
		d.mu.Unlock()
		d.changed()
		d.log.Warn("policy stream", "err", err)
		if time.Since(start) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		if errors.Is(err, ErrUnauthorized) {
			backoff = max(backoff, 30*time.Second)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-cc.sessionEnded():
			t.Stop()
			d.sessionEnded(ctx, cc, ErrSessionEnded)
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// applyPolicyLocked installs a snapshot: keys, routes, front-end, pool.
func (d *Daemon) applyPolicyLocked(p *controlapi.ClientPolicy, persist bool) {
	if len(p.JWKS) > 0 {
		if keys, err := ctoken.ParseJWKS(p.JWKS); err == nil {
			d.keys.Replace(keys)
		} else {
			d.log.Warn("policy carries unusable JWKS", "err", err)
		}
	}
	d.issuer = p.Issuer
	d.pol = p
	if d.ctl != nil {
		d.learnControllersLocked(p.ControllerURLs)
	}
	if persist {
		d.rememberReplicas(p.ControllerURLs)
	}
	d.relays.Store(&p.Relays)
	t := buildRouteTable(p)
	d.table.Store(t)
	if persist {
		if err := d.state.writeJSON(policyFile, p); err != nil {
			d.log.Warn("save policy", "err", err)
		}
	}
	if d.pool != nil {
		d.pool.retain(p.Connectors)
	}
	if d.front != nil {
		d.front.Update(d.policyViewLocked())
	}
	d.learnRangesLocked(p)
}

// learnControllersLocked adds the controller's replicas, as its policy
// names them, to the URLs the controller client fails over to (the one
// signed in with stays first; the deployment CA still verifies them all).
func (d *Daemon) learnControllersLocked(urls []string) {
	if err := d.ctl.api.SetLearned(urls); err != nil {
		d.log.Warn("controller replicas", "err", err)
	}
}
