package controller

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
)

// signedSetup returns a running controller with alice signed in and a
// connector that has reported a digest.
func signedSetup(t *testing.T) (*testEnv, *component, *device, string) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	digest := randomDigest()
	e.heartbeat(con, digest, "192.0.2.10:4433")
	dev := e.login("alice@example.com", "correct horse")
	return e, con, dev, digest
}

func TestConnectionTokenClaims(t *testing.T) {
	e, con, dev, digest := signedSetup(t)
	st, data := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: con.id})
	if st != 200 {
		t.Fatalf("token: %d %s", st, data)
	}
	var tr controlapi.TokenResponse
	mustJSON(t, data, &tr)
	keys, err := ctoken.ParseJWKS(e.c.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	// The JWKS is also served at the well-known path.
	if st, body := e.call(nil, "GET", controlapi.PathJWKS, "", nil); st != 200 || !strings.Contains(string(body), `"kid"`) {
		t.Fatalf("jwks: %d %s", st, body)
	}
	v := &ctoken.Verifier{Issuer: e.url, Keys: ctoken.NewKeySet(keys)}
	c, err := v.Verify(tr.Token, con.id)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectorCertSHA256 != digest || tr.CertSHA256 != digest {
		t.Fatalf("ccs %q, want %q", c.ConnectorCertSHA256, digest)
	}
	if c.Cnf.JKT != pki.KeyThumbprint(dev.pub) {
		t.Fatal("cnf.jkt is not the device key thumbprint")
	}
	if c.Subject != dev.session.Principal.ID || c.Device != dev.session.DeviceID || c.PrincipalKind != "user" || c.ID == "" {
		t.Fatalf("claims: %+v", c)
	}
	if d := time.Until(c.ExpiresAt.Time); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("exp in %s, want ~10m", d)
	}
	// Two tokens have different jti.
	_, data2 := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: con.id})
	var tr2 controlapi.TokenResponse
	mustJSON(t, data2, &tr2)
	c2, err := v.Verify(tr2.Token, con.id)
	if err != nil || c2.ID == c.ID {
		t.Fatalf("second token: %v, jti %s vs %s", err, c2.ID, c.ID)
	}

	// A digest change by heartbeat reaches new tokens.
	d2 := randomDigest()
	st, data = e.call(con.http, "POST", controlapi.PathConnectorHeartbeat, "", controlapi.Heartbeat{CertSHA256: []string{d2, digest}, Addrs: []string{"192.0.2.10:4433"}})
	if st != 200 {
		t.Fatalf("heartbeat: %d %s", st, data)
	}
	_, data = e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: con.id})
	mustJSON(t, data, &tr)
	if c, err = v.Verify(tr.Token, con.id); err != nil || c.ConnectorCertSHA256 != d2 {
		t.Fatalf("after rotation: %v %+v", err, c)
	}

	// No token for a connector whose network serves nothing for alice.
	lab := e.enroll(KindConnector, "lab-a")
	e.heartbeat(lab, randomDigest())
	if st, data := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: lab.id}); st != 403 {
		t.Fatalf("token for lab connector: %d %s", st, data)
	}
	// No token for a connector that has not reported a digest.
	corpB := e.c.model().ConnectorByName["corp-b"]
	if st, data := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: corpB.ID}); st != 409 {
		t.Fatalf("token for silent connector: %d %s", st, data)
	}
	if st, _ := e.call(nil, "POST", controlapi.PathConnectionToken, "pss_bogus", controlapi.TokenRequest{ConnectorID: con.id}); st != 401 {
		t.Fatalf("token with bogus session: %d", st)
	}
	if st, _ := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: "con_nope"}); st != 404 {
		t.Fatalf("token for unknown connector: %d", st)
	}
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestTokenValidationRefusals(t *testing.T) {
	e, con, dev, _ := signedSetup(t)
	resp, err := e.c.IssueConnectionToken(dev.session.SessionToken, con.id)
	if err != nil {
		t.Fatal(err)
	}
	good := resp.Token
	keys, _ := ctoken.ParseJWKS(e.c.JWKS())
	v := &ctoken.Verifier{Issuer: e.url, Keys: ctoken.NewKeySet(keys)}
	if _, err := v.Verify(good, con.id); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(raw, &claims)
	var header map[string]any
	raw, _ = base64.RawURLEncoding.DecodeString(parts[0])
	json.Unmarshal(raw, &header)
	kid := header["kid"].(string)
	signer := e.c.signer.Load()

	resign := func(mod func(map[string]any)) string {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		mod(c)
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims(c))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(signer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pub := keys[kid]
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
	hs.Header["kid"] = kid
	hsTok, _ := hs.SignedString([]byte(pub))
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	unk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims(claims))
	unk.Header["kid"] = "nope"
	unkTok, _ := unk.SignedString(otherKey)
	wrongKey := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims(claims))
	wrongKey.Header["kid"] = kid
	wrongKeyTok, _ := wrongKey.SignedString(otherKey)
	tampered := func() string {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		c["sub"] = "usr_attacker"
		return parts[0] + "." + b64(c) + "." + parts[2]
	}()

	cases := map[string]string{
		"alg none":                   b64(map[string]any{"alg": "none", "typ": "JWT", "kid": kid}) + "." + parts[1] + ".",
		"alg none with sig":          b64(map[string]any{"alg": "none", "typ": "JWT", "kid": kid}) + "." + parts[1] + "." + parts[2],
		"HS256 with the public key":  hsTok,
		"wrong aud":                  resign(func(c map[string]any) { c["aud"] = []string{"con_other"} }),
		"wrong iss":                  resign(func(c map[string]any) { c["iss"] = "https://evil.example" }),
		"expired":                    resign(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }),
		"missing exp":                resign(func(c map[string]any) { delete(c, "exp") }),
		"missing cnf":                resign(func(c map[string]any) { delete(c, "cnf") }),
		"missing ccs":                resign(func(c map[string]any) { delete(c, "ccs") }),
		"tampered payload":           tampered,
		"unknown kid":                unkTok,
		"right kid, wrong key":       wrongKeyTok,
		"megabyte of dots":           strings.Repeat(".", 1<<20),
		"empty":                      "",
		"garbage":                    "a.b.c",
		"issued in the future (iat)": resign(func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() }),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := v.Verify(tok, con.id)
			if err == nil {
				t.Fatal("accepted")
			}
			// Refusals are cheap (signature checks take microseconds); the
			// bound is loose for the race detector on a shared machine.
			limit := 250 * time.Millisecond
			if name == "megabyte of dots" {
				limit = 10 * time.Millisecond // refused by size before any parsing
			}
			if d := time.Since(start); d > limit {
				t.Fatalf("refusal took %s", d)
			}
			if name == "megabyte of dots" && !errors.Is(err, ctoken.ErrTooLarge) {
				t.Fatalf("want ErrTooLarge, got %v", err)
			}
		})
	}
	// Leeway is at most 30 s: a token expired 20 s ago still passes, 40 s ago does not.
	if _, err := v.Verify(resign(func(c map[string]any) { c["exp"] = time.Now().Add(-20 * time.Second).Unix() }), con.id); err != nil {
		t.Fatalf("within leeway refused: %v", err)
	}
	if _, err := v.Verify(resign(func(c map[string]any) { c["exp"] = time.Now().Add(-40 * time.Second).Unix() }), con.id); err == nil {
		t.Fatal("40 s past exp accepted")
	}
}
