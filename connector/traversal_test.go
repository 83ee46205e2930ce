package connector

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/relay"
	"postern.dev/postern/traversal"
	"postern.dev/postern/wire"
)

// relayEnv is a connector lab plus an enrolled postern-relay, all on a
// non-loopback host address (relays never relay to loopback peers).
type relayEnv struct {
	*env
	ip string
}

func newRelayEnv(t *testing.T) *relayEnv {
	ip := hostIPOrEmpty()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address to run a relay on")
	}
	e := newEnv(t, func(c *Config) { c.ListenUDP = ip + ":0" })
	tok, err := e.ctl.EnrollmentToken("relay", "relay-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{
			Token: tok, StateDir: t.TempDir(), PublicIP: net.ParseIP(ip),
			ListenUDP: testenv.FreeAddr(t, "udp", ip),
			ListenTLS: testenv.FreeAddr(t, "tcp", ip),
			Logger:    testenv.Logger(t), AllowSelfPeers: true, // client, connector and relay share one address
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("relay: %v", err)
		}
	})
	return &relayEnv{env: e, ip: ip}
}

// relayDialer is a client-side traversal dialer for device d.
func (e *relayEnv) relayDialer(t *testing.T, d *device, tok controlapi.TokenResponse, noDirect bool) *traversal.Dialer {
	t.Helper()
	var creds controlapi.TURNCredentials
	if err := e.post(controlapi.PathTURNCredentials, d.session, struct{}{}, &creds); err != nil {
		t.Fatalf("TURN credentials: %v", err)
	}
	td, err := traversal.NewDialer(traversal.DialerConfig{
		ListenAddr: e.ip + ":0",
		Relays:     func() []controlapi.RelayInfo { return creds.Relays },
		TURNCredentials: func(context.Context) (controlapi.TURNCredentials, error) {
			return creds, nil
		},
		ConnectionToken: func(context.Context, string) (string, error) { return tok.Token, nil },
		NoDirect:        noDirect,
		Logger:          testenv.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { td.Close() })
	return td
}

func (e *relayEnv) waitRelayLink(t *testing.T) {
	e.eventually(20*time.Second, "signaling link to the relay and a server-reflexive address", func() bool {
		h := e.c.Health()
		up := false
		for _, ok := range h.RelayLinks {
			up = up || ok
		}
		return up && len(h.ReflexiveAddrs) > 0
	})
}

// waitRelayListed waits until the controller lists the relay, with its pinned
// certificate, to signed-in clients.
func (e *relayEnv) waitRelayListed(t *testing.T, d *device) {
	e.eventually(10*time.Second, "relay listed for clients", func() bool {
		var creds controlapi.TURNCredentials
		if err := e.post(controlapi.PathTURNCredentials, d.session, struct{}{}, &creds); err != nil {
			return false
		}
		for _, r := range creds.Relays {
			if r.Online && r.TLSCertSHA256 != "" {
				return true
			}
		}
		return false
	})
}

func tlsFor(d *device, digest string) *tls.Config {
	tc := pki.PinnedPeerConfig(func() []string { return []string{digest} }, wire.ServerName(digest), []string{wire.ALPN})
	tc.Certificates = []tls.Certificate{d.cert}
	return tc
}

// The connector keeps a signaling link to the relay of its policy, learns
// its server-reflexive address, and serves a client that reaches it only
// through the relay (TURN) and, separately, on a hole-punched direct path.
func TestTraversalRelayedAndDirectPaths(t *testing.T) {
	e := newRelayEnv(t)
	e.waitRelayLink(t)
	h := e.c.Health()
	for _, a := range h.ReflexiveAddrs {
		found := false
		for _, x := range h.Addrs {
			found = found || x == a
		}
		if !found {
			t.Fatalf("reflexive address %s not advertised in %v", a, h.Addrs)
		}
	}
	e.waitRelayListed(t, e.alice)
	tok := e.alice.token()
	for _, tc := range []struct {
		name     string
		noDirect bool
		want     string
	}{{"relay", true, traversal.PathRelay}, {"direct", false, traversal.PathDirect}} {
		t.Run(tc.name, func(t *testing.T) {
			td := e.relayDialer(t, e.alice, tok, tc.noDirect)
			ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
			defer cancel()
			ci := controlapi.ConnectorInfo{ID: e.c.ID(), Name: "corp-a", Online: true, CertSHA256: []string{tok.CertSHA256}}
			conn, p, err := td.Dial(ctx, ci, tlsFor(e.alice, tok.CertSHA256), e.c.QUICConfig())
			if err != nil {
				t.Fatalf("dial through the relay: %v", err)
			}
			defer conn.CloseWithError(0, "")
			if p.Path != tc.want {
				t.Fatalf("path = %+v, want %s", p, tc.want)
			}
			_, st, msg, err := authenticate(conn, tok.Token)
			if err != nil || st != wire.StatusOK {
				t.Fatalf("authenticate: %v %v %s", err, st, msg)
			}
			cc := &clientConn{t: t, conn: conn}
			s, status, msg := cc.open(e.echoFlow(e.resourceID("echo")))
			if status != wire.StatusOK {
				t.Fatalf("flow: %v %s", status, msg)
			}
			echoRoundTrip(t, s, "through the "+tc.name+" path")
			s.Close()
		})
	}
}

// An offer whose Connection Token the connector refuses (here: the device
// was revoked after it got the token, which the relay cannot know) gets no
// answer and no punch: the client's dial fails with the connector's refusal.
func TestTraversalOfferOfRevokedDeviceRefused(t *testing.T) {
	e := newRelayEnv(t)
	e.waitRelayLink(t)
	e.waitRelayListed(t, e.alice)
	tok := e.alice.token()
	td := e.relayDialer(t, e.alice, tok, true)
	if err := e.post(controlapi.PathLogout, e.alice.session, struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	e.eventually(10*time.Second, "revocation in the connector's policy", func() bool {
		return e.c.policy.Load().revoked[e.alice.id]
	})
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	ci := controlapi.ConnectorInfo{ID: e.c.ID(), Name: "corp-a", Online: true}
	conn, _, err := td.Dial(ctx, ci, tlsFor(e.alice, tok.CertSHA256), e.c.QUICConfig())
	if err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("a revoked device's offer was answered")
	}
	// The relay learns revocations too (RelayPolicy) and may refuse first.
	if !strings.Contains(err.Error(), "refused by connector") && !strings.Contains(err.Error(), "access revoked") {
		t.Fatalf("dial error = %v, want the connector's refusal", err)
	}
}
