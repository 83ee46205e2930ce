package client

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
)

// token fetches a Connection Token for a dial. When the controller cannot
// be reached, the last verified token of e is reused while it stays valid
// for at least tokenReuseMargin (fail static); a refusal is never papered
// over.
func (p *pool) token(ctx context.Context, e *connEntry, info controlapi.ConnectorInfo) (string, *ctoken.Claims, error) {
	tctx, tcancel := context.WithTimeout(ctx, tokenFetchTimeout)
	token, claims, err := p.tokens.ConnectionToken(tctx, info)
	tcancel()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.lastToken, e.lastClaims = token, claims
		return token, claims, nil
	}
	if errors.Is(err, ErrNotSignedIn) || errors.Is(err, ErrTokenInvalid) || e.lastClaims == nil || e.lastClaims.ExpiresAt == nil {
		return "", nil, err
	}
	if left := time.Until(e.lastClaims.ExpiresAt.Time); left < tokenReuseMargin {
		// Expired (or about to): only when the controller cannot be
		// reached at all. The connector accepts it only while it cannot
		// reach the controller either, for a bound its admin sets (fail
		// static, connector/failstatic.go); a refusal stays a refusal.
		if !errors.Is(err, ErrControllerUnreachable) {
			return "", nil, err
		}
		p.log.Warn("controller unreachable; offering the expired connection token to the connector (fail static)", "connector", info.Name, "err", err, "expired", e.lastClaims.ExpiresAt.Time)
		return e.lastToken, e.lastClaims, nil
	}
	p.log.Warn("controller unreachable; reusing the still valid connection token", "connector", info.Name, "err", err, "expires", e.lastClaims.ExpiresAt.Time)
	return e.lastToken, e.lastClaims, nil
}

// heldToken returns the last verified token of e when it names digest
// (empty: e's current digest) and stays valid for refreshMargin beyond
// notBefore: an extra connection (spread.go) presents it instead of asking
// the controller, and a refresh uses it when another connection of e
// already fetched a newer one.
func (p *pool) heldToken(e *connEntry, digest string, notBefore time.Time) (string, *ctoken.Claims, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if digest == "" {
		digest = e.digest
	}
	cl := e.lastClaims
	if cl == nil || cl.ExpiresAt == nil || digest == "" || !pki.DigestEqual(cl.ConnectorCertSHA256, digest) ||
		cl.ExpiresAt.Time.Before(notBefore.Add(refreshMargin)) || time.Until(cl.ExpiresAt.Time) < refreshMargin {
		return "", nil, false
	}
	return e.lastToken, cl, true
}

// refresh sends a fresh Connection Token on the control stream before the
// current one expires. When the controller is unreachable it retries; the
// connection keeps working until the token expires (fail static).
//
// When the connector rotated its certificate (the token names another
// digest), the connection drains: new flows go to a new connection, dialed
// at once in the background, while this one keeps its running flows and
// keeps being refreshed (the connector accepts a refresh naming the
// certificate that replaced the one it served) until they end and monitor
// closes it: make-before-break, so a long flow outlives the rotation.
func (p *pool) refresh(e *connEntry, conn *quic.Conn, ctrl *quic.Stream, digest string, exp time.Time) {
	defer p.wg.Done()
	for {
		wait := time.Until(exp) - refreshMargin
		if ttl := time.Until(exp); wait < ttl/3 {
			wait = ttl / 3
		}
		if wait < time.Second {
			wait = time.Second
		}
		if !p.pause(conn, wait, nil) {
			return
		}
		for {
			e.mu.Lock()
			info := e.info
			e.mu.Unlock()
			token, claims, held := p.heldToken(e, digest, exp)
			var err error
			if !held {
				ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
				token, claims, err = p.tokens.ConnectionToken(ctx, info)
				cancel()
			}
			if err == nil && !pki.DigestEqual(claims.ConnectorCertSHA256, digest) {
				digest = claims.ConnectorCertSHA256
				e.mu.Lock()
				first := e.conn == conn && !e.draining
				if first {
					e.draining = true
				}
				e.mu.Unlock()
				if first {
					p.log.Info("connector certificate rotated; new flows use a new connection, running flows stay on this one", "connector", info.Name)
					p.startReconnect(e, nil)
					p.changed()
				}
			}
			if err == nil {
				err = sendToken(ctrl, token)
				if err == nil {
					exp = claims.ExpiresAt.Time
					e.mu.Lock()
					if e.conn == conn {
						e.tokenExp = exp
					} else if _, x := e.extraLocked(conn); x != nil {
						x.tokenExp = exp
					}
					e.lastToken, e.lastClaims = token, claims
					e.mu.Unlock()
					p.changed()
					break
				}
				if errors.Is(err, ErrConnectorRejected) {
					e.mu.Lock()
					if e.conn == conn {
						e.draining = true
					} else if _, x := e.extraLocked(conn); x != nil {
						x.draining = true
					}
					e.mu.Unlock()
					p.log.Warn("connector refused refreshed token; draining connection", "connector", info.Name, "err", err)
					return
				}
			}
			p.log.Warn("refresh connection token", "connector", info.Name, "err", err)
			if !p.pause(conn, refreshRetry, p.kicked()) {
				return
			}
		}
	}
}

// pause waits d, or until kick is closed (a nil kick never is); it reports
// false when the pool or conn ended first.
func (p *pool) pause(conn *quic.Conn, d time.Duration, kick <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-conn.Context().Done():
		return false
	case <-kick:
		return true
	case <-t.C:
		return true
	}
}
