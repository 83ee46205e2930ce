package client

import (
	"context"
	"time"
)

// sessionEnded signs the daemon out after the controller refused its session
// (HTTP 401 on the policy stream, the token endpoint or any other call made
// with the session token: the session or device was revoked, the account
// removed, or the session expired). Unlike an unreachable controller (fail
// static, state "degraded"), this is final: the tunnel goes down, every flow
// and connection to connectors is torn down, the session and policy are
// deleted, and status says signed_out with ErrSessionEnded's message until
// someone signs in again. cc and ctx are the policy loop's: a loop that was
// cancelled, or belongs to a session already replaced, changes nothing.
func (d *Daemon) sessionEnded(ctx context.Context, cc *controlClient, cause error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ctx.Err() != nil || d.ctl != cc || d.sess == nil || d.closed.Load() {
		return
	}
	d.log.Warn("the controller ended this session; signing out", "principal", d.sess.Principal.Name, "controller", d.sess.ControllerURL, "err", cause)
	d.downLocked()
	if d.sessCancel != nil {
		d.sessCancel() // our own loop: it returns after this call
		d.sessCancel = nil
	}
	cc.close()
	d.ctl = nil
	for _, f := range []string{sessionFile, policyFile} {
		if err := d.state.remove(f); err != nil {
			d.log.Warn("forget the ended session", "file", f, "err", err)
		}
	}
	d.sess, d.pol = nil, nil
	d.relays.Store(nil)
	d.table.Store(buildRouteTable(nil))
	d.sigTokens.Range(func(k, _ any) bool { d.sigTokens.Delete(k); return true })
	d.reachable, d.downSince = false, time.Time{}
	d.lastErr = ErrSessionEnded.Error()
	d.changed()
}
