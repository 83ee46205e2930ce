package session

import (
	"context"
	"time"
)

// end forgets the session after the controller refused it (HTTP 401 on the
// policy stream, the token endpoint or any other call made with the session
// token: the session or device was revoked, the account removed, or the
// session expired). Unlike an unreachable controller (fail static), this is
// final: the Observer is told (the daemon takes the tunnel down and says
// ErrSessionEnded's message until someone signs in again), then the session
// and policy are deleted. cc and ctx are the policy loop's: a loop
// that was cancelled, or belongs to a session already replaced, changes
// nothing.
func (m *Manager) end(ctx context.Context, cc *controlClient, cause error) {
	m.mu.Lock()
	current := ctx.Err() == nil && m.ctl == cc && m.info != nil && !m.closed.Load()
	m.mu.Unlock()
	if !current {
		return
	}
	// The Observer first: what the end means for the rest (tunnel down,
	// status message) is in place by the time the session shows signed out.
	m.obs.SessionEnded(cause)
	m.mu.Lock()
	defer m.mu.Unlock()
	if ctx.Err() != nil || m.ctl != cc || m.info == nil {
		return // stopped meanwhile (Close keeps the session; Begin and Logout replace it)
	}
	m.log.Warn("the controller ended this session; signing out", "principal", m.info.Principal.Name, "controller", m.info.ControllerURL, "err", cause)
	if m.cancel != nil {
		m.cancel() // our own loop: it returns after this call
		m.cancel = nil
	}
	cc.close()
	m.ctl = nil
	for _, f := range []string{SessionFile, PolicyFile} {
		if err := m.dir.Remove(f); err != nil {
			m.log.Warn("forget the ended session", "file", f, "err", err)
		}
	}
	m.info = nil
	m.forgetPolicyLocked()
	m.sigTokens.Range(func(k, _ any) bool { m.sigTokens.Delete(k); return true })
	m.reachable, m.downSince = false, time.Time{}
}
