// Connection Token tests: the certificate digest, device-key binding,
// expired, forged and misdirected tokens, and expiry and refresh on a live
// connection.

package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/ctoken"
	"postern.dev/postern/wire"
)

func TestDigestMismatchAbortsClient(t *testing.T) {
	e := newEnv(t, nil)
	tr := e.alice.token()
	wrong := strings.Repeat("ab", 32)
	if _, err := e.alice.dial(wrong); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("dial with a wrong digest: %v, want a digest mismatch", err)
	}
	if conn, err := e.alice.dial(tr.CertSHA256); err != nil {
		t.Fatalf("dial with the right digest: %v", err)
	} else {
		conn.CloseWithError(0, "")
	}
}

func expectRefusedToken(t testing.TB, conn *quic.Conn, tok, what string) {
	t.Helper()
	_, st, msg, err := authenticate(conn, tok)
	if err == nil && st == wire.StatusOK {
		t.Fatalf("%s: token accepted", what)
	}
	if err == nil && st != wire.StatusUnauthenticated {
		t.Fatalf("%s: status %v %s, want unauthenticated", what, st, msg)
	}
	// The connection is closed by the connector.
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: connection not closed", what)
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeUnauthenticated {
		t.Fatalf("%s: close cause %v", what, err)
	}
	t.Logf("%s: refused: %s", what, msg)
}

func TestTokenBoundToAnotherDeviceKey(t *testing.T) {
	e := newEnv(t, nil)
	other := e.login("alice@example.com", "alice-password-1")
	tr := e.alice.token()
	conn, err := other.dial(tr.CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	expectRefusedToken(t, conn, tr.Token, "token of another device")
}

// signer returns the controller's current token-signing key from its data dir.
func (l *lab) signer() *ctoken.Signer {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.ctlDir, "token-keys.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var keys []struct {
		KID     string `json:"kid"`
		Private string `json:"private"`
	}
	if err := json.Unmarshal(b, &keys); err != nil || len(keys) == 0 {
		l.t.Fatalf("token keys: %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(keys[0].Private)
	return &ctoken.Signer{Issuer: l.ctl.Issuer(), KeyID: keys[0].KID, Key: ed25519.PrivateKey(raw)}
}

// claimsFor builds valid claims for d against the connector's current certificate.
func (e *env) claimsFor(d *device, ttl time.Duration) ctoken.Claims {
	pub := d.key.Public().(ed25519.PublicKey)
	return ctoken.Claims{
		PrincipalKind: "user", Device: d.id, ConnectorCertSHA256: e.c.certs.current(),
		Cnf: ctoken.Confirmation{JKT: pkiThumb(pub)},
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: d.pid, Audience: jwt.ClaimStrings{e.c.ID()}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
		},
	}
}

func TestExpiredForgedMisdirectedTokens(t *testing.T) {
	e := newEnv(t, nil)
	s := e.signer()
	digest := e.c.certs.current()
	mk := func(mut func(*ctoken.Claims), sg *ctoken.Signer) string {
		cl := e.claimsFor(e.alice, time.Minute)
		mut(&cl)
		tok, err := sg.Issue(cl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	_, forgedKey, _ := ed25519.GenerateKey(rand.Reader)
	forger := &ctoken.Signer{Issuer: s.Issuer, KeyID: s.KeyID, Key: forgedKey}
	cases := map[string]string{
		"expired":          mk(func(c *ctoken.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute)) }, s),
		"forged signature": mk(func(*ctoken.Claims) {}, forger),
		"misdirected":      mk(func(c *ctoken.Claims) { c.Audience = jwt.ClaimStrings{"another-connector"} }, s),
		"wrong issuer":     mk(func(*ctoken.Claims) {}, &ctoken.Signer{Issuer: "https://evil.example", KeyID: s.KeyID, Key: s.Key}),
		"other cert":       mk(func(c *ctoken.Claims) { c.ConnectorCertSHA256 = strings.Repeat("cd", 32) }, s),
		"alg none":         noneToken(e.claimsFor(e.alice, time.Minute)),
	}
	for what, tok := range cases {
		conn, err := e.alice.dial(digest)
		if err != nil {
			t.Fatal(err)
		}
		expectRefusedToken(t, conn, tok, what)
		conn.CloseWithError(0, "")
	}
	// A correctly made token passes (so the cases above fail for their reason).
	conn, err := e.alice.dial(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	if _, st, msg, err := authenticate(conn, mk(func(*ctoken.Claims) {}, s)); err != nil || st != wire.StatusOK {
		t.Fatalf("valid token: %v %v %s", err, st, msg)
	}
}

func noneToken(c ctoken.Claims) string {
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	return tok
}

func TestFlowBeforeAuthAndTokenExpiryAndRefresh(t *testing.T) {
	e := newEnv(t, nil)
	s := e.signer()
	digest := e.c.certs.current()
	conn, err := e.alice.dial(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	cl := e.claimsFor(e.alice, 3*time.Second)
	tok, _ := s.Issue(cl)
	ctrl, st, _, err := authenticate(conn, tok)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("auth: %v %v", err, st)
	}
	cc := &clientConn{t: t, conn: conn, ctrl: ctrl}
	flow := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow")
	// Refresh in band before expiry: the connection outlives the first token.
	cl2 := e.claimsFor(e.alice, 6*time.Second)
	tok2, _ := s.Issue(cl2)
	if err := wire.WriteFrame(ctrl, wire.KindToken, []byte(tok2)); err != nil {
		t.Fatal(err)
	}
	if st, msg, err := wire.ReadStatus(ctrl); err != nil || st != wire.StatusOK {
		t.Fatalf("refresh: %v %v %s", err, st, msg)
	}
	// A refresh naming another principal is refused but keeps the connection.
	bad := e.claimsFor(e.alice, time.Minute)
	bad.Subject = "someone-else"
	tok3, _ := s.Issue(bad)
	wire.WriteFrame(ctrl, wire.KindToken, []byte(tok3))
	if st, _, err := wire.ReadStatus(ctrl); err != nil || st != wire.StatusUnauthenticated {
		t.Fatalf("refresh for another principal: %v %v", err, st)
	}
	time.Sleep(4 * time.Second)
	echoRoundTrip(t, flow, "after the first token expired")
	// Without another refresh the connection closes at expiry.
	select {
	case <-conn.Context().Done():
	case <-time.After(6 * time.Second):
		t.Fatal("connection not closed at token expiry")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeTokenExpired {
		t.Fatalf("close cause %v, want token expired", err)
	}
}
