package connector

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"postern.dev/postern/ctoken"
)

// Fail static while the controller is unreachable.
//
// Devices hold Connection Tokens that live minutes (ctoken.DefaultTTL); when
// the controller is down they cannot get new ones. The connector then keeps
// serving, from its last policy, the devices whose token was still valid
// when it lost the controller: such a token is accepted after its expiry (a
// refresh on a running connection, or the first token of a new one), and a
// connection whose token expires is kept, until FailStaticMax after the
// controller went away. The last policy's revocations still apply. Once
// the policy stream is back, its snapshot applies revocations at once
// (enforce), and each connection still on an expired token has
// failStaticGrace to present a fresh one before it is closed.
const (
	// DefaultFailStaticMax bounds how long after losing the controller the
	// connector keeps accepting expired tokens.
	DefaultFailStaticMax = time.Hour
	// failStaticGrace is how long a connection on an expired token has,
	// once the controller is back, to refresh it (clients retry every 10 s).
	failStaticGrace = 15 * time.Second
	// policyRetryMax caps the wait between policy stream attempts, so that
	// the connector is back on the policy (and its revocations) within about
	// a second of the controller's return.
	policyRetryMax = time.Second
)

// ctlState tracks whether the policy stream is up and since when it is not.
type ctlState struct {
	mu        sync.Mutex
	up        bool
	downSince time.Time // the connector started, or the stream broke
}

// setControllerUp records that the policy stream delivers again; after an
// outage, connections on expired tokens get failStaticGrace to refresh.
func (c *Connector) setControllerUp() {
	c.ctlState.mu.Lock()
	was := c.ctlState.up
	since := c.ctlState.downSince
	c.ctlState.up = true
	c.ctlState.mu.Unlock()
	if was {
		return
	}
	c.log.Info("policy stream up", "down_for", time.Since(since).Round(time.Millisecond))
	c.eachSession((*session).afterOutage)
}

// setControllerDown records that the policy stream broke.
func (c *Connector) setControllerDown() {
	c.ctlState.mu.Lock()
	defer c.ctlState.mu.Unlock()
	if c.ctlState.up {
		c.ctlState.up = false
		c.ctlState.downSince = time.Now()
	}
}

// failStaticDeadline reports whether a token expiring at exp may still be
// honoured now, and until when: the controller is unreachable, the token was
// valid when it went away, and FailStaticMax has not passed since.
func (c *Connector) failStaticDeadline(exp time.Time) (time.Time, bool) {
	if c.cfg.FailStaticMax < 0 {
		return time.Time{}, false
	}
	c.ctlState.mu.Lock()
	up, since := c.ctlState.up, c.ctlState.downSince
	c.ctlState.mu.Unlock()
	if up || !exp.After(since) {
		return time.Time{}, false
	}
	dl := since.Add(c.cfg.FailStaticMax)
	if !time.Now().Before(dl) {
		return time.Time{}, false
	}
	return dl, true
}

// verifyExpired verifies a token that failed only by having expired, as of
// just before its expiry (signature, issuer, audience, issue time), when
// fail static allows it. origErr is returned when it does not.
func (c *Connector) verifyExpired(p *compiledPolicy, tok, audience string, origErr error) (*ctoken.Claims, error) {
	if !errors.Is(origErr, jwt.ErrTokenExpired) {
		return nil, origErr
	}
	var unverified ctoken.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &unverified); err != nil || unverified.ExpiresAt == nil {
		return nil, origErr
	}
	exp := unverified.ExpiresAt.Time
	dl, ok := c.failStaticDeadline(exp)
	if !ok {
		return nil, origErr
	}
	// As of one second before expiry, but never before the issue time (a
	// token issued after its own expiry stays refused).
	at := exp.Add(-time.Second)
	if unverified.IssuedAt != nil && at.Before(unverified.IssuedAt.Time) {
		at = unverified.IssuedAt.Time
	}
	v := p.tokenVerifier()
	v.Now = func() time.Time { return at }
	cl, err := v.Verify(tok, audience)
	if err != nil {
		return nil, err
	}
	c.log.Info("accepting an expired connection token: controller unreachable (fail static)",
		"principal", cl.Subject, "device", cl.Device, "expired", exp, "fail_static_until", dl)
	return cl, nil
}

// onTokenExpiry runs when the connection's token expires: during fail
// static it waits for the deadline (or the controller's return), otherwise
// it closes the connection.
func (s *session) onTokenExpiry() {
	s.mu.Lock()
	cl := s.claims
	if cl == nil || time.Now().Before(cl.ExpiresAt.Time) {
		s.mu.Unlock()
		return // refreshed meanwhile
	}
	if dl, ok := s.c.failStaticDeadline(cl.ExpiresAt.Time); ok {
		s.expTimer.Reset(time.Until(dl))
		s.mu.Unlock()
		s.log.Info("connection token expired while the controller is unreachable; keeping the connection (fail static)",
			"principal", cl.Subject, "until", dl)
		return
	}
	s.mu.Unlock()
	s.log.Info("connection token expired", "principal", cl.Subject)
	s.close(codeTokenExpired, "connection token expired")
}

// afterOutage gives a connection still on an expired token failStaticGrace
// to refresh it, now that the controller is back.
func (s *session) afterOutage() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claims == nil || s.expTimer == nil || time.Now().Before(s.claims.ExpiresAt.Time) {
		return
	}
	s.expTimer.Reset(failStaticGrace)
	s.log.Info("controller back; the connection must refresh its expired token", "principal", s.claims.Subject, "within", failStaticGrace)
}

// validateFailStaticMax checks the configured bound.
func validateFailStaticMax(d time.Duration) error {
	if d > 30*24*time.Hour {
		return fmt.Errorf("fail-static bound %v is over 30 days", d)
	}
	return nil
}
