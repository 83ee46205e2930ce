package connector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/wire"
)

// TestSeveralConnectionsFromOneDevice: the client keeps several QUIC
// connections per connector (client/spread.go). Each presents the same
// Connection Token on its own control stream and is a session of its own:
// flows work on every one, an in-band refresh extends only the connection
// it was sent on, and a connection that was not refreshed closes at its
// token's expiry while the device's other connection and its flow go on.
func TestSeveralConnectionsFromOneDevice(t *testing.T) {
	e := newEnv(t, nil)
	s := e.signer()
	digest := e.c.certs.current()
	tok, err := s.Issue(e.claimsFor(e.alice, 3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var conns []*clientConn
	var flows []*quic.Stream
	for i := 0; i < 3; i++ {
		conn, err := e.alice.dial(digest)
		if err != nil {
			t.Fatal(err)
		}
		ctrl, st, msg, err := authenticate(conn, tok)
		if err != nil || st != wire.StatusOK {
			t.Fatalf("connection %d: auth with the device's token: %v %v %s", i, err, st, msg)
		}
		cc := &clientConn{t: t, conn: conn, ctrl: ctrl}
		conns = append(conns, cc)
		flows = append(flows, cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow"))
	}
	e.c.mu.Lock()
	n := len(e.c.sessions)
	e.c.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d sessions for the device's 3 connections", n)
	}
	for i, f := range flows {
		echoRoundTrip(t, f, "flow on connection "+string(rune('0'+i)))
	}
	// Refresh connection 0 only.
	tok2, _ := s.Issue(e.claimsFor(e.alice, 20*time.Second))
	if err := wire.WriteFrame(conns[0].ctrl, wire.KindToken, []byte(tok2)); err != nil {
		t.Fatal(err)
	}
	if st, msg, err := wire.ReadStatus(conns[0].ctrl); err != nil || st != wire.StatusOK {
		t.Fatalf("refresh: %v %v %s", err, st, msg)
	}
	for i := 1; i < 3; i++ {
		select {
		case <-conns[i].conn.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d not closed at its token's expiry", i)
		}
		var ae *quic.ApplicationError
		if err := context.Cause(conns[i].conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeTokenExpired {
			t.Fatalf("connection %d: close cause %v, want token expired", i, err)
		}
	}
	if err := conns[0].conn.Context().Err(); err != nil {
		t.Fatalf("the refreshed connection closed with the others: %v", context.Cause(conns[0].conn.Context()))
	}
	echoRoundTrip(t, flows[0], "flow on the refreshed connection")
	conns[0].mustOpen(e.echoFlow(e.resourceID("echo")), "new flow on the refreshed connection")
}
