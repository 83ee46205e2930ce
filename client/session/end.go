package session

import (
	"context"
	"time"
)

// end forgets the session after the controller refused it (HTTP 401 on the
// policy stream, the token endpoint or any other call made with the session
// token: the session or device was revoked, the account removed, or the
// session expired). Unlike an unreachable controller (fail static), this is
// final: the session and policy are deleted and the Observer is told, which
// takes the tunnel down and says signed_out with ErrSessionEnded's message
// until someone signs in again. cc and ctx are the policy loop's: a loop
// that was cancelled, or belongs to a session already replaced, changes
// nothing.
func (m *Manager) end(ctx context.Context, cc *controlClient, cause error) {
	m.mu.Lock()
	if ctx.Err() != nil || m.ctl != cc || m.info == nil || m.closed.Load() {
		m.mu.Unlock()
		return
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
	m.mu.Unlock()
	m.obs.SessionEnded(cause)
}
