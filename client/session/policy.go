// The session's background work: the controller client, the policy stream
// that keeps the current snapshot fresh (resuming by revision), and the
// session's part of applying a policy (signing keys, relays, replicas).

package session

import (
	"context"
	"errors"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
)

// startLocked creates the controller client when there is none and starts
// the policy stream and posture reports.
func (m *Manager) startLocked() error {
	if m.ctl == nil {
		cc, err := newControlClient(m.info.ControllerURL, m.info.CAPEM, m.info.SessionToken)
		if err != nil {
			return err
		}
		m.ctl = cc
		if m.pol != nil {
			m.learnControllersLocked(m.pol.ControllerURLs)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go m.policyLoop(ctx, m.ctl)
	go m.postureLoop(ctx, m.ctl)
	return nil
}

// stopLoops cancels the loops, waits for them and closes the controller
// client. Called with life held, mu not.
func (m *Manager) stopLoops() {
	m.mu.Lock()
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	m.mu.Unlock()
	// Also when end already cancelled the loop: it may still be returning.
	m.wg.Wait()
	m.mu.Lock()
	if m.ctl != nil {
		m.ctl.close()
		m.ctl = nil
	}
	m.reachable = false
	m.downSince = time.Time{}
	m.mu.Unlock()
}

// policyLoop keeps the policy stream open, reconnecting with backoff and
// resuming from the last revision.
func (m *Manager) policyLoop(ctx context.Context, cc *controlClient) {
	defer m.wg.Done()
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		m.mu.Lock()
		rev := int64(0)
		if m.pol != nil {
			rev = m.pol.Revision
		}
		m.mu.Unlock()
		start := time.Now()
		err := cc.policyStream(ctx, rev, func() {
			m.mu.Lock()
			was := m.reachable
			m.reachable, m.downSince = true, time.Time{}
			m.mu.Unlock()
			// Token refreshes that failed while the controller was away
			// retry now (the observer's business): a connector in fail
			// static wants a fresh token soon after the controller is back.
			m.obs.ControllerUp(!was)
		}, func(p *controlapi.ClientPolicy) {
			m.mu.Lock()
			if ctx.Err() == nil {
				m.applyPolicyLocked(p, true)
			}
			m.mu.Unlock()
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrSessionEnded) {
			m.end(ctx, cc, err)
			return
		}
		m.mu.Lock()
		if m.reachable || m.downSince.IsZero() {
			m.downSince = time.Now()
		}
		m.reachable = false
		m.mu.Unlock()
		m.obs.ControllerDown(err.Error())
		m.log.Warn("policy stream", "err", err)
		if time.Since(start) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-cc.sessionEnded():
			t.Stop()
			m.end(ctx, cc, ErrSessionEnded)
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// applyPolicyLocked installs a snapshot: signing keys, issuer, replicas,
// relays; persist saves it (fail static) and the replicas it names.
func (m *Manager) applyPolicyLocked(p *controlapi.ClientPolicy, persist bool) {
	if len(p.JWKS) > 0 {
		if keys, err := ctoken.ParseJWKS(p.JWKS); err == nil {
			m.keys.Replace(keys)
		} else {
			m.log.Warn("policy carries unusable JWKS", "err", err)
		}
	}
	m.issuer = p.Issuer
	if m.ctl != nil {
		m.learnControllersLocked(p.ControllerURLs)
	}
	if persist {
		m.rememberReplicas(p.ControllerURLs)
	}
	m.relays.Store(&p.Relays)
	if persist {
		if err := m.dir.WriteJSON(PolicyFile, p); err != nil {
			m.log.Warn("save policy", "err", err)
		}
	}
	m.setPolicyLocked(p)
}

// forgetPolicyLocked drops the policy and what came with it.
func (m *Manager) forgetPolicyLocked() {
	m.relays.Store(nil)
	m.setPolicyLocked(nil)
}

// learnControllersLocked adds the controller's replicas, as its policy
// names them, to the URLs the controller client fails over to (the one
// signed in with stays first; the deployment CA still verifies them all).
func (m *Manager) learnControllersLocked(urls []string) {
	if err := m.ctl.api.SetLearned(urls); err != nil {
		m.log.Warn("controller replicas", "err", err)
	}
}
