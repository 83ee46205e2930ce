package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/sigwire/sigwiretest"
)

const secret = "turn-secret"

type fixture struct {
	jwks   json.RawMessage
	c1Key  string
	r      *Relay
	ca     *pki.CA
	signer *ctoken.Signer
	rcert  tls.Certificate
}

// newKeys makes the deployment CA, the token signer and the relay's TLS
// certificate, without starting a relay.
func newKeys(t testing.TB) *fixture {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	signer := &ctoken.Signer{Issuer: "https://ctl.test", KeyID: "k1", Key: sk}
	jwks, _ := json.Marshal(ctoken.JWKS{Keys: []ctoken.JWK{ctoken.PublicJWK("k1", sk.Public().(ed25519.PublicKey))}})
	_, rk, _ := ed25519.GenerateKey(rand.Reader)
	rc, err := pki.SelfSigned(rk, "postern-relay", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, signer: signer, rcert: rc, jwks: jwks}
}

func newFixture(t testing.TB, mut func(*Config)) *fixture {
	t.Helper()
	f := newKeys(t)
	ca, signer, rc, jwks := f.ca, f.signer, f.rcert, f.jwks
	cfg := Config{ListenUDP: "127.0.0.1:0", ListenTLS: "127.0.0.1:0", PublicIP: net.ParseIP("127.0.0.1"),
		RelayIP: net.ParseIP("127.0.0.1"), Realm: "postern.test", TLSCert: rc, CA: ca.Cert,
		AllowLoopbackPeers: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mut != nil {
		mut(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetCredentials(secret, signer.Issuer, jwks); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f.r = r
	return f
}

// allocate makes a TURN allocation on the relay and returns its relayed
// socket (see turnClient).
func (f *fixture) allocate(t *testing.T, username, password string) (net.PacketConn, error) {
	t.Helper()
	_, relayed, err := f.turnClient(t, username, password)
	return relayed, err
}

func creds(exp time.Time, principal, sec string) (string, string) {
	u := controlapi.TURNUsername(exp, principal)
	return u, controlapi.TURNPassword(sec, u)
}

func TestTURNCredentials(t *testing.T) {
	f := newFixture(t, nil)
	u, p := creds(time.Now().Add(time.Minute), "user-1", secret)
	relayed, err := f.allocate(t, u, p)
	if err != nil {
		t.Fatalf("valid credential refused: %v", err)
	}
	relayed.Close()

	u, p = creds(time.Now().Add(time.Minute), "user-1", "wrong-secret")
	if _, err := f.allocate(t, u, p); err == nil {
		t.Fatal("credential signed with the wrong secret was accepted")
	}
	u, p = creds(time.Now().Add(-time.Minute), "user-1", secret)
	if _, err := f.allocate(t, u, p); err == nil {
		t.Fatal("expired credential was accepted")
	}
	if _, err := f.allocate(t, "no-expiry", controlapi.TURNPassword(secret, "no-expiry")); err == nil {
		t.Fatal("malformed username was accepted")
	}
	u, p = creds(time.Now().Add(30*24*time.Hour), "user-1", secret)
	if _, err := f.allocate(t, u, p); err == nil {
		t.Fatal("credential valid for a month was accepted")
	}
	st := f.r.Stats()
	if st["postern_relay_refusals_total"] < 3 {
		t.Fatalf("refusals = %v, want >= 3", st["postern_relay_refusals_total"])
	}
}

func TestTURNQuotaPerPrincipal(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAllocationsPerPrincipal = 2 })
	u, p := creds(time.Now().Add(time.Minute), "user-q", secret)
	for i := 0; i < 2; i++ {
		if _, err := f.allocate(t, u, p); err != nil {
			t.Fatalf("allocation %d refused: %v", i, err)
		}
	}
	if _, err := f.allocate(t, u, p); err == nil {
		t.Fatal("third allocation of a principal with quota 2 was accepted")
	}
	u2, p2 := creds(time.Now().Add(time.Minute), "user-other", secret)
	if _, err := f.allocate(t, u2, p2); err != nil {
		t.Fatalf("another principal was refused: %v", err)
	}
}

func TestUnregisteredRelayRefusesAll(t *testing.T) {
	a := newTURNAuth(4, func(string) {})
	u, _ := creds(time.Now().Add(time.Minute), "user-1", secret)
	if _, err := a.check(u, &net.UDPAddr{}); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("err = %v, want ErrNotRegistered", err)
	}
}

func (f *fixture) signal(t testing.TB, cert *tls.Certificate, hello *sigwire.Message) (*sigwire.Conn, *sigwire.Message) {
	t.Helper()
	return sigwiretest.Hello(t, f.r.TLSAddr().String(), []string{f.r.TLSCertSHA256()}, cert, hello)
}

func (f *fixture) connectorCert(t testing.TB, ca *pki.CA, id string) tls.Certificate {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	c, err := ca.IssueClient("connector:"+id, k.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
}

func (f *fixture) clientToken(t testing.TB, aud string, dev ed25519.PrivateKey, exp time.Time) string {
	tok, err := f.signer.Issue(ctoken.Claims{PrincipalKind: "user", Device: "dev-1",
		ConnectorCertSHA256: strings.Repeat("a", 64),
		Cnf:                 ctoken.Confirmation{JKT: pki.KeyThumbprint(dev.Public().(ed25519.PublicKey))},
		RegisteredClaims: jwt.RegisteredClaims{Subject: "user-1", Audience: jwt.ClaimStrings{aud},
			ExpiresAt: jwt.NewNumericDate(exp)}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSignalingAuthAndRouting(t *testing.T) {
	f := newFixture(t, nil)
	// A connector with a certificate from the deployment CA.
	cc := f.connectorCert(t, f.ca, "c1")
	conn, w := f.signal(t, &cc, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if w.Type != sigwire.TypeWelcome || w.Connector != "c1" {
		t.Fatalf("connector hello: %+v", w)
	}
	// A connector certificate from another CA is refused.
	other, _ := pki.NewCA("other")
	bad := f.connectorCert(t, other, "c1")
	if _, w := f.signal(t, &bad, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}); w.Type != sigwire.TypeError {
		t.Fatalf("foreign connector certificate: %+v", w)
	}
	_, dev, _ := ed25519.GenerateKey(rand.Reader)
	devCert, _ := pki.SelfSigned(dev, "device", time.Hour)
	_, dev2, _ := ed25519.GenerateKey(rand.Reader)
	dev2Cert, _ := pki.SelfSigned(dev2, "device", time.Hour)
	tok := f.clientToken(t, "c1", dev, time.Now().Add(time.Minute))
	for name, tc := range map[string]struct {
		cert *tls.Certificate
		tok  string
		aud  string
	}{
		"wrong audience":   {&devCert, f.clientToken(t, "c2", dev, time.Now().Add(time.Minute)), "c1"},
		"expired":          {&devCert, f.clientToken(t, "c1", dev, time.Now().Add(-time.Hour)), "c1"},
		"other device key": {&dev2Cert, tok, "c1"},
		"no device cert":   {nil, tok, "c1"},
		"garbage token":    {&devCert, "not.a.jwt", "c1"},
	} {
		if _, w := f.signal(t, tc.cert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: tc.aud, Token: tc.tok}); w.Type != sigwire.TypeError {
			t.Errorf("%s: accepted: %+v", name, w)
		}
	}
	cl, w := f.signal(t, &devCert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: "c1", Token: tok})
	if w.Type != sigwire.TypeWelcome || w.Session == "" {
		t.Fatalf("client hello: %+v", w)
	}
	if err := cl.Write(&sigwire.Message{Type: sigwire.TypeOffer, Ufrag: "u", Pwd: "p", Candidates: []sigwire.Candidate{{Type: "host", Addr: "198.18.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	off, err := conn.Read()
	if err != nil {
		t.Fatal(err)
	}
	if off.Type != sigwire.TypeOffer || off.Session != w.Session || off.Principal != "user-1" || off.Token != tok {
		t.Fatalf("forwarded offer: %+v", off)
	}
	if err := conn.Write(&sigwire.Message{Type: sigwire.TypeAnswer, Session: w.Session, Ufrag: "cu", Pwd: "cp"}); err != nil {
		t.Fatal(err)
	}
	ans, err := cl.Read()
	if err != nil || ans.Type != sigwire.TypeAnswer || ans.Ufrag != "cu" {
		t.Fatalf("answer: %+v %v", ans, err)
	}
	// Bad candidates are refused, not forwarded.
	if err := cl.Write(&sigwire.Message{Type: sigwire.TypeCandidate, Candidates: []sigwire.Candidate{{Type: "host", Addr: "not-an-ip:1"}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := cl.Read(); err != nil || m.Type != sigwire.TypeError {
		t.Fatalf("bad candidate: %+v %v", m, err)
	}
	// The client leaving sends bye to the connector.
	cl.Close()
	if m, err := conn.Read(); err != nil || m.Type != sigwire.TypeBye || m.Session != w.Session {
		t.Fatalf("bye: %+v %v", m, err)
	}
}
