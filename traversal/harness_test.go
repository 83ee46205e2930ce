package traversal

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/relay"
)

// world is an in-process deployment: a CA, a token signer, one relay, one
// connector (QUIC echo server + agent) and a client device.
type world struct {
	t          testing.TB
	ca         *pki.CA
	signer     *ctoken.Signer
	jwks       json.RawMessage
	turnSecret string
	relay      *relay.Relay
	relayInfo  controlapi.RelayInfo
	connID     string
	connCert   tls.Certificate // QUIC identity (self-signed)
	connClient tls.Certificate // deployment-CA client cert
	devKey     ed25519.PrivateKey
	devCert    tls.Certificate
	relayCert  tls.Certificate
	log        *slog.Logger
	// principal is the client's user (token subject and TURN principal);
	// "" is "user-1".
	principal string
	// signalPing is the connector agent's SignalPing (0: its default).
	signalPing time.Duration
}

func (w *world) user() string {
	if w.principal != "" {
		return w.principal
	}
	return "user-1"
}

func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("POSTERN_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{t: t, connID: "conn-1", turnSecret: "s3cret-turn", log: testLogger()}
	var err error
	if w.ca, err = pki.NewCA("test CA"); err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	w.signer = &ctoken.Signer{Issuer: "https://controller.test", KeyID: "k1", Key: sk}
	w.jwks, _ = json.Marshal(ctoken.JWKS{Keys: []ctoken.JWK{ctoken.PublicJWK("k1", sk.Public().(ed25519.PublicKey))}})
	_, ck, _ := ed25519.GenerateKey(rand.Reader)
	if w.connCert, err = pki.SelfSigned(ck, "connector", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, cck, _ := ed25519.GenerateKey(rand.Reader)
	cc, err := w.ca.IssueClient("connector:"+w.connID, cck.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.connClient = tls.Certificate{Certificate: [][]byte{cc.Raw}, PrivateKey: cck, Leaf: cc}
	_, w.devKey, _ = ed25519.GenerateKey(rand.Reader)
	if w.devCert, err = pki.SelfSigned(w.devKey, "device", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, rk, _ := ed25519.GenerateKey(rand.Reader)
	if w.relayCert, err = pki.SelfSigned(rk, "postern-relay", time.Hour); err != nil {
		t.Fatal(err)
	}
	return w
}

// startRelay starts the relay on loopback.
func (w *world) startRelay() {
	w.startRelayOn("127.0.0.1", "0", "0", true)
}

// startRelayOn starts the relay on ip with the given ports.
func (w *world) startRelayOn(ip, udpPort, tlsPort string, loopback bool) {
	t := w.t
	r, err := relay.New(relay.Config{
		ListenUDP: net.JoinHostPort(ip, udpPort), ListenTLS: net.JoinHostPort(ip, tlsPort), PublicIP: net.ParseIP(ip),
		RelayIP: net.ParseIP(ip), Realm: "postern.test", TLSCert: w.relayCert, CA: w.ca.Cert,
		AllowLoopbackPeers: loopback, Logger: w.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetCredentials(w.turnSecret, w.signer.Issuer, w.jwks); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	w.relay = r
	w.relayInfo = controlapi.RelayInfo{ID: "relay-1", Name: "relay-1", UDPAddr: r.UDPAddr().String(),
		TLSAddr: r.TLSAddr().String(), Online: true, TLSCertSHA256: r.TLSCertSHA256()}
}

// runningWorld is a world with its relay and connector running; ctx is the
// connector's, cancelled when the test ends (before the connector's cleanup
// waits for it).
func runningWorld(t testing.TB) (context.Context, *world, *ConnectorAgent, *quic.Transport) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorld(t)
	w.startRelay()
	a, tr := w.startConnector(ctx)
	t.Cleanup(cancel)
	return ctx, w, a, tr
}

// startConnector runs a QUIC echo server and the connector agent on one
// plain UDP socket.
func (w *world) startConnector(ctx context.Context) (*ConnectorAgent, *quic.Transport) {
	return w.startConnectorOn(ctx, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

func (w *world) startConnectorOn(ctx context.Context, at *net.UDPAddr) (*ConnectorAgent, *quic.Transport) {
	t := w.t
	udp, err := net.ListenUDP("udp", at)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	serverTLS := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{w.connCert},
		NextProtos: []string{"postern/1"}, ClientAuth: tls.RequireAnyClientCert,
	}
	serverQUIC := &quic.Config{KeepAlivePeriod: 5 * time.Second, InitialPacketSize: InitialPacketSize}
	ln, err := tr.Listen(serverTLS, serverQUIC)
	if err != nil {
		t.Fatal(err)
	}
	go serveEcho(ctx, ln)
	a, err := NewConnectorAgent(ConnectorAgentConfig{
		Transport:   tr,
		Certificate: func() (*tls.Certificate, error) { return &w.connClient, nil },
		// A connector's TURN credential, as the controller issues it
		// (principal "connector:<id>").
		TURNCredentials: func(context.Context) (controlapi.TURNCredentials, error) {
			exp := time.Now().Add(10 * time.Minute)
			u := controlapi.TURNUsername(exp, "connector:"+w.connID)
			return controlapi.TURNCredentials{Username: u, Password: controlapi.TURNPassword(w.turnSecret, u), ExpiresAt: exp, Realm: "postern.test"}, nil
		},
		// The same QUIC server on an allocation's transport.
		Serve: func(tr *quic.Transport) {
			ln, err := tr.Listen(serverTLS, serverQUIC)
			if err != nil {
				w.log.Warn("listen on relayed transport", "err", err)
				return
			}
			go serveEcho(ctx, ln)
		},
		SignalPing: w.signalPing,
		Logger:     w.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.SetRelays([]controlapi.RelayInfo{w.relayInfo})
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { <-done })
	testenv.Eventually(t, 20*time.Second, "the connector agent to connect to the relay", func() bool { return a.Connected()[w.relayInfo.ID] })
	return a, tr
}

func serveEcho(ctx context.Context, ln *quic.Listener) {
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			for {
				s, err := c.AcceptStream(ctx)
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(s, s); s.Close() }()
			}
		}()
	}
}

func (w *world) token(aud string) string {
	tok, err := w.signer.Issue(ctoken.Claims{
		PrincipalKind: "user", Device: "dev-1",
		ConnectorCertSHA256: pki.CertDigest(w.connCert.Certificate[0]),
		Cnf:                 ctoken.Confirmation{JKT: pki.KeyThumbprint(w.devKey.Public().(ed25519.PublicKey))},
		RegisteredClaims: jwt.RegisteredClaims{Subject: w.user(), Audience: jwt.ClaimStrings{aud},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(5 * time.Minute))},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

func (w *world) creds() controlapi.TURNCredentials {
	exp := time.Now().Add(10 * time.Minute)
	u := controlapi.TURNUsername(exp, w.user())
	return controlapi.TURNCredentials{Username: u, Password: controlapi.TURNPassword(w.turnSecret, u), ExpiresAt: exp, Realm: "postern.test"}
}

func (w *world) dialerConfig(relays []controlapi.RelayInfo) DialerConfig {
	return DialerConfig{
		ListenAddr: "127.0.0.1:0",
		Relays:     func() []controlapi.RelayInfo { return relays },
		TURNCredentials: func(context.Context) (controlapi.TURNCredentials, error) {
			return w.creds(), nil
		},
		ConnectionToken: func(_ context.Context, id string) (string, error) { return w.token(id), nil },
		Logger:          w.log,
	}
}

func (w *world) clientTLS() *tls.Config {
	want := []string{pki.CertDigest(w.connCert.Certificate[0])}
	c := pki.PinnedPeerConfig(func() []string { return want }, "connector", []string{"postern/1"})
	c.Certificates = []tls.Certificate{w.devCert}
	return c
}

func (w *world) connectorInfo() controlapi.ConnectorInfo {
	return controlapi.ConnectorInfo{ID: w.connID, Name: "c1", Online: true,
		CertSHA256: []string{pki.CertDigest(w.connCert.Certificate[0])}}
}

// newDialer makes a Dialer from cfg; it closes when the test ends.
func newDialer(t testing.TB, cfg DialerConfig) *Dialer {
	t.Helper()
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// dial connects d to ci within 10 s and fails the test unless the path has
// kind path and transport (either empty: any).
func (w *world) dial(t testing.TB, ctx context.Context, d *Dialer, ci controlapi.ConnectorInfo, path, transport string) (*quic.Conn, PathInfo) {
	t.Helper()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, p, err := d.Dial(dctx, ci, w.clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if (path != "" && p.Path != path) || (transport != "" && p.Transport != transport) {
		conn.CloseWithError(0, "")
		t.Fatalf("path = %+v, want %s/%s", p, path, transport)
	}
	return conn, p
}

// echo sends msg on a new stream and checks the echo.
func echo(t *testing.T, ctx context.Context, c *quic.Conn, msg string) {
	t.Helper()
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	s.Close()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}
