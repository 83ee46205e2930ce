package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/relay"
	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/sigwire/sigwiretest"
)

// Issue 14 finding 1: TURN credentials only for principals that may use a
// connector, bound to the device; relays are refused.
func TestTURNCredentialsOnlyForConnectorUsers(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(strings.Replace(testYAML, "users:\n  - email: alice", "users:\n  - email: carol@example.com\n    password: \"correct horse\"\n  - email: alice", 1))
	carol := e.login("carol@example.com", "correct horse")
	if st, data := e.call(nil, "GET", controlapi.PathTURNCredentials, carol.session.SessionToken, nil); st != 403 {
		t.Fatalf("TURN credentials for a user without resources: %d %s", st, data)
	}
	alice := e.login("alice@example.com", "correct horse")
	st, data := e.call(nil, "GET", controlapi.PathTURNCredentials, alice.session.SessionToken, nil)
	if st != 200 {
		t.Fatalf("TURN credentials for alice: %d %s", st, data)
	}
	var tc controlapi.TURNCredentials
	mustJSON(t, data, &tc)
	_, principal, device, err := controlapi.ParseTURNUsername(tc.Username)
	if err != nil || principal != alice.session.Principal.ID || device != alice.session.DeviceID {
		t.Fatalf("username %q not bound to principal %s and device %s (%v)", tc.Username, alice.session.Principal.ID, alice.session.DeviceID, err)
	}
	rl := e.enroll(KindRelay, "relay-1")
	if st, _ := e.call(rl.http, "POST", controlapi.PathTURNCredentials, "", nil); st != 403 {
		t.Fatalf("TURN credentials for a relay: %d", st)
	}
}

// Issue 14 finding 7: a relay drops the signaling registration of a connector
// deleted on the controller, or re-keyed, within seconds; and the session of
// a revoked device.
func TestRelayDropsStaleConnectorsAndRevokedDevices(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	tok, err := e.c.EnrollmentToken(KindRelay, "relay-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{Token: tok, StateDir: t.TempDir(), PublicIP: net.ParseIP("127.0.0.1"),
			ListenUDP: "127.0.0.1:0", ListenTLS: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	var ri controlapi.RelayInfo
	testenv.Eventually(t, 10*time.Second, "relay registered", func() bool {
		for _, r := range e.c.model().relayInfos() {
			if r.TLSCertSHA256 != "" {
				ri = r
				return true
			}
		}
		return false
	})
	dial := func(cert tls.Certificate, hello *sigwire.Message) (*sigwire.Conn, *sigwire.Message) {
		t.Helper()
		return sigwiretest.Hello(t, ri.TLSAddr, []string{ri.TLSCertSHA256}, &cert, hello)
	}
	connHello := &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}
	a := e.enroll(KindConnector, "corp-a")
	b := e.enroll(KindConnector, "corp-b")
	ca, w := dial(a.cert, connHello)
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("corp-a: %+v", w)
	}
	cb, w := dial(b.cert, connHello)
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("corp-b: %+v", w)
	}
	e.heartbeat(b, randomDigest())
	alice := e.login("alice@example.com", "correct horse")
	ct, err := e.c.IssueConnectionToken(alice.session.SessionToken, b.id)
	if err != nil {
		t.Fatal(err)
	}
	devCert, err := pki.SelfSigned(alice.priv, "device", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl, w := dial(devCert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: b.id, Token: ct.Token})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("client: %+v", w)
	}

	// Delete corp-a on the controller: its registration ends within 3 s.
	start := time.Now()
	e.apply(strings.Replace(testYAML, "connectors: [corp-a, corp-b]", "connectors: [corp-b]", 1))
	waitClosed(t, ca, 3*time.Second, "deleted connector's registration")
	t.Logf("deleted connector dropped after %s", time.Since(start).Round(time.Millisecond))
	if _, w := dial(a.cert, connHello); w.Type != sigwire.TypeError {
		t.Fatalf("deleted connector registered again: %+v", w)
	}

	// Revoke alice's session (her only one): her signaling session ends.
	var sessions ListResponse
	mustJSON(t, e.admin("GET", "/api/v1/sessions", nil, 200), &sessions)
	for _, it := range sessions.Items {
		e.admin("DELETE", "/api/v1/sessions/"+it.(map[string]any)["id"].(string), nil, 204)
	}
	waitClosed(t, cl, 3*time.Second, "revoked device's signaling session")

	// Re-key corp-b: the registration with the old key ends.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if st, data := e.call(b.http, "POST", controlapi.PathRenew, "", controlapi.RenewRequest{PublicKeyPEM: pubPEM(pub)}); st != 200 {
		t.Fatalf("renew corp-b: %d %s", st, data)
	}
	waitClosed(t, cb, 3*time.Second, "re-keyed connector's old registration")
}

// waitClosed reads c until the relay closes it or d passes.
func waitClosed(t *testing.T, c *sigwire.Conn, d time.Duration, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		_, err := c.Read()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s still open after %s", what, d)
		}
		return
	}
}
