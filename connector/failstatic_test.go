package connector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/ctoken"
	"postern.dev/postern/wire"
)

// TestFailStaticExpiredTokens: with the policy stream down, a token that
// was valid when the controller went away is accepted after its expiry
// (well past the 30 s leeway) until FailStaticMax after the outage began;
// a token that had expired before, one past the bound, or one for a device
// the last policy revoked is refused; a connection whose token expires is
// kept; with the controller reachable, an expired token is refused.
func TestFailStaticExpiredTokens(t *testing.T) {
	const bound = 3 * time.Minute
	e := newEnv(t, func(c *Config) { c.FailStaticMax = bound })
	s := e.signer()
	digest := e.c.certs.current()
	// issue signs a token as the controller did ten minutes before exp
	// (Signer.Issue stamps the current time).
	issue := func(exp time.Time) string {
		cl := e.claimsFor(e.alice, time.Minute)
		cl.Issuer, cl.ID = s.Issuer, ctoken.NewJTI()
		cl.ExpiresAt = jwt.NewNumericDate(exp)
		cl.IssuedAt = jwt.NewNumericDate(exp.Add(-10 * time.Minute))
		cl.NotBefore = jwt.NewNumericDate(exp.Add(-10*time.Minute - ctoken.Leeway))
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, cl)
		tk.Header["kid"] = s.KeyID
		tok, err := tk.SignedString(s.Key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	expiredDuringOutage := issue(now.Add(-time.Minute))
	expiredBefore := issue(now.Add(-5 * time.Minute))

	// Controller reachable: an expired token is refused.
	e.eventually(10*time.Second, "policy stream up", func() bool {
		e.c.ctlState.mu.Lock()
		defer e.c.ctlState.mu.Unlock()
		return e.c.ctlState.up
	})
	refused := func(tok, what string) {
		t.Helper()
		conn, err := e.alice.dial(digest)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		expectRefusedToken(t, conn, tok, what)
	}
	refused(expiredDuringOutage, "expired token with the controller reachable")

	e.stopCtl()
	e.stopCtl = func() {}
	e.eventually(10*time.Second, "policy stream down", func() bool {
		e.c.ctlState.mu.Lock()
		defer e.c.ctlState.mu.Unlock()
		return !e.c.ctlState.up
	})
	// Pretend the outage began two minutes ago (a real one would make the
	// test wait past the token leeway).
	e.c.ctlState.mu.Lock()
	e.c.ctlState.downSince = now.Add(-2 * time.Minute)
	e.c.ctlState.mu.Unlock()

	refused(expiredBefore, "token that expired before the outage")
	conn, err := e.alice.dial(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ctrl, st, msg, err := authenticate(conn, expiredDuringOutage)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("token valid when the controller went away: %v %v %s", err, st, msg)
	}
	cc := &clientConn{t: t, conn: conn, ctrl: ctrl}
	flow := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow on the fail-static connection")
	echoRoundTrip(t, flow, "fail static")
	// The token's expiry timer fired at once and kept the connection.
	if err := context.Cause(conn.Context()); err != nil {
		t.Fatalf("fail-static connection closed: %v", err)
	}

	// Past the bound: refused, and the connection above is closed.
	e.c.ctlState.mu.Lock()
	e.c.ctlState.downSince = now.Add(-bound - time.Second)
	e.c.ctlState.mu.Unlock()
	refused(issue(now.Add(-time.Minute)), "token past the fail-static bound")
	for _, s := range e.sessions() {
		s.onTokenExpiry()
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("fail-static connection not closed past the bound")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeTokenExpired {
		t.Fatalf("close cause %v, want token expired", err)
	}
}

// sessions lists the connector's live sessions.
func (e *env) sessions() []*session {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	out := make([]*session, 0, len(e.c.sessions))
	for s := range e.c.sessions {
		out = append(out, s)
	}
	return out
}
